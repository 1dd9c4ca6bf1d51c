//! Client identity: named client groups and which of them a request belongs to. A group is defined by the
//! source addresses (CIDRs) its clients connect from, the Proxy-Authorization credentials (Basic users,
//! Bearer tokens) and client certificates it accepts, and/or the workloads (namespace, service account, pod
//! labels) its pods run as; any of them makes a client a member. A request's identity is the set of groups it belongs to;
//! rules scoped with `clients:` apply only to requests whose identity contains one of their groups.

use super::credentials::{self, GroupCredentials, Presented, ProxyAuth};
use super::workload::{Workload, WorkloadSelector};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Index of a client group, in config order.
pub type GroupId = u16;

/// The client groups a request belongs to (sorted, no duplicates). Empty: an unidentified client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    groups: Vec<GroupId>,
}

impl Identity {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Is the request in at least one of `groups`?
    pub fn in_any(&self, groups: &[GroupId]) -> bool {
        groups.iter().any(|g| self.groups.binary_search(g).is_ok())
    }

    /// Add the groups of authenticated credentials.
    pub fn add_all(&mut self, groups: &[GroupId]) {
        groups.iter().for_each(|&g| self.add(g));
    }

    fn add(&mut self, g: GroupId) {
        if let Err(at) = self.groups.binary_search(&g) {
            self.groups.insert(at, g);
        }
    }
}

struct Group {
    name: Arc<str>,
    cidrs: Vec<IpNet>,
    credentials: GroupCredentials,
    workloads: WorkloadSelector,
    /// `mode: report`: this group's policy denials are would-be denials.
    report: bool,
}

/// What the Proxy-Authorization header of a request established.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No header.
    #[default]
    None,
    /// Credentials of these groups; `user` is the Basic user name.
    Valid {
        groups: Vec<GroupId>,
        user: Option<String>,
    },
    /// A header no group accepts (unknown user, wrong password or token, malformed).
    Invalid,
    /// A header that could not be checked: too many password checks were in progress, or this client
    /// address had `per_source` pending already; a turn was waited for up to `waited`.
    Unchecked {
        waited: std::time::Duration,
        per_source: usize,
    },
}

/// Checked headers are remembered (by SHA-256) so that argon2 runs once per header, not per request: at most
/// this many accepted ones, and as many refused ones (kept apart, so a flood of wrong passwords cannot push
/// the accepted ones out).
const CACHE_MAX: usize = 4096;

/// The configured client groups.
#[derive(Default)]
pub struct ClientGroups {
    groups: Vec<Group>,
    verified: Mutex<HashMap<[u8; 32], Credentials>>,
    refused: Mutex<HashMap<[u8; 32], Credentials>>,
    /// Password checks per Basic header: the most users sharing one name (across groups).
    basic_slots: usize,
    /// The hash a Basic header's unused checks run against (made on first use: it costs one argon2 run).
    dummy: OnceLock<String>,
    /// argon2 verifications run, real and dummy.
    verifications: AtomicU64,
}

impl ClientGroups {
    /// Add a group; the caller has checked that names are unique.
    pub fn add(&mut self, name: &str, cidrs: Vec<IpNet>) -> GroupId {
        self.add_with_credentials(name, cidrs, GroupCredentials::default())
    }

    /// Add a group whose members may also be identified by credentials.
    pub fn add_with_credentials(
        &mut self,
        name: &str,
        cidrs: Vec<IpNet>,
        credentials: GroupCredentials,
    ) -> GroupId {
        self.groups.push(Group {
            name: name.into(),
            cidrs: cidrs.into_iter().map(|n| n.trunc()).collect(),
            credentials,
            workloads: WorkloadSelector::default(),
            report: false,
        });
        let mut per_name: HashMap<&str, usize> = HashMap::new();
        for u in self.groups.iter().flat_map(|g| &g.credentials.users) {
            *per_name.entry(&u.name).or_default() += 1;
        }
        self.basic_slots = per_name.values().copied().max().unwrap_or(0);
        (self.groups.len() - 1) as GroupId
    }

    /// Put a group in report mode (`clients[].mode: report`).
    pub fn set_report(&mut self, group: GroupId) {
        if let Some(g) = self.groups.get_mut(group as usize) {
            g.report = true;
        }
    }

    /// Make the pods `selector` selects members of a group (`namespaces`, `service_accounts`, `pod_labels`).
    pub fn set_workloads(&mut self, group: GroupId, selector: WorkloadSelector) {
        if let Some(g) = self.groups.get_mut(group as usize) {
            g.workloads = selector;
        }
    }

    /// Does any group select workloads (so pod identities must be looked up)?
    pub fn uses_workloads(&self) -> bool {
        self.groups.iter().any(|g| !g.workloads.is_empty())
    }

    /// The groups whose workload selectors match the pod.
    pub fn identify_workload(&self, pod: &Workload) -> Vec<GroupId> {
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.workloads.matches(pod))
            .map(|(i, _)| i as GroupId)
            .collect()
    }

    /// Is the client in a group in report mode?
    pub fn reports(&self, id: &Identity) -> bool {
        id.groups
            .iter()
            .any(|&g| self.groups.get(g as usize).is_some_and(|g| g.report))
    }

    /// The groups whose members authenticate with credentials.
    pub fn credential_groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.credentials.is_empty())
            .map(|(i, _)| i as GroupId)
    }

    /// The result for a header that needs no password hashing: no header, no credential groups, or a header
    /// checked before. `None`: [`ClientGroups::authenticate`] has work to do (argon2, slow on purpose).
    pub fn known(&self, header: Option<&ProxyAuth>) -> Option<Credentials> {
        // Without credential-based groups the header means nothing here (it may be meant for another
        // proxy); it is ignored, and stripped like every hop-by-hop header.
        let Some(header) = header.filter(|_| self.credential_groups().next().is_some()) else {
            return Some(Credentials::None);
        };
        let key = credentials::cache_key(header);
        let cached = |cache: &Mutex<HashMap<_, Credentials>>| {
            cache.lock().ok().and_then(|m| m.get(&key).cloned())
        };
        cached(&self.verified).or_else(|| cached(&self.refused))
    }

    /// Check a Proxy-Authorization header against every group's users and tokens.
    pub fn authenticate(&self, header: Option<&ProxyAuth>) -> Credentials {
        if let Some(c) = self.known(header) {
            return c;
        }
        let Some(header) = header else {
            return Credentials::None;
        };
        let key = credentials::cache_key(header);
        let (groups, user): (Vec<GroupId>, _) = match credentials::parse(header) {
            Presented::Basic { user, password } => {
                let groups = self.check_basic(&user, &password);
                (groups, Some(user))
            }
            Presented::Bearer(token) => (
                self.groups
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| {
                        credentials::token_matches(&g.credentials.token_sha256, &token)
                    })
                    .map(|(i, _)| i as GroupId)
                    .collect(),
                None,
            ),
            Presented::Malformed => {
                if is_basic(header) {
                    // Same work as a well-formed one: the refusal takes as long whatever the header says.
                    self.check_basic("", "");
                }
                (Vec::new(), None)
            }
        };
        let (c, cache) = if groups.is_empty() {
            (Credentials::Invalid, &self.refused)
        } else {
            (Credentials::Valid { groups, user }, &self.verified)
        };
        if let Ok(mut m) = cache.lock() {
            if m.len() >= CACHE_MAX {
                m.clear();
            }
            m.insert(key, c.clone());
        }
        c
    }

    /// The groups in which `user` has this password. Runs exactly `basic_slots` argon2 verifications whether
    /// the name is known or not (the unused ones against a dummy hash with a real user's parameters), so the
    /// time a refusal takes does not tell which user names exist.
    fn check_basic(&self, user: &str, password: &str) -> Vec<GroupId> {
        let mut groups = Vec::new();
        let mut runs = 0;
        for (i, g) in self.groups.iter().enumerate() {
            let mut member = false;
            for u in g.credentials.users.iter().filter(|u| u.name == user) {
                runs += 1;
                member |= self.verify(&u.phc, password);
            }
            if member {
                groups.push(i as GroupId);
            }
        }
        let dummy = self.dummy.get_or_init(|| {
            let first = self.groups.iter().flat_map(|g| &g.credentials.users).next();
            credentials::dummy_phc(first.map(|u| u.phc.as_str()))
        });
        for _ in runs..self.basic_slots {
            std::hint::black_box(self.verify(dummy, password));
        }
        groups
    }

    fn verify(&self, phc: &str, password: &str) -> bool {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        credentials::password_matches(phc, password)
    }

    /// argon2 verifications run so far (real and dummy), for tests and diagnostics.
    pub fn password_verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn find(&self, name: &str) -> Option<GroupId> {
        self.groups
            .iter()
            .position(|g| &*g.name == name)
            .map(|i| i as GroupId)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().map(|g| &*g.name)
    }

    /// The groups whose CIDRs contain the client's source address (IPv4-mapped IPv6 counts as IPv4).
    pub fn identify(&self, source: IpAddr) -> Identity {
        let ip = source.to_canonical();
        let mut id = Identity::default();
        for (i, g) in self.groups.iter().enumerate() {
            if g.cidrs.iter().any(|n| n.contains(&ip)) {
                id.add(i as GroupId);
            }
        }
        id
    }

    /// The groups whose certificate patterns match the client certificate's names.
    pub fn identify_cert(&self, names: &[super::credentials::CertName]) -> Vec<GroupId> {
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.credentials.cert_matches(names))
            .map(|(i, _)| i as GroupId)
            .collect()
    }

    /// The identity of a member of the named group only (`egressd check --client NAME`).
    pub fn member_of(&self, name: &str) -> Option<Identity> {
        let mut id = Identity::default();
        id.add(self.find(name)?);
        Some(id)
    }

    /// The name of group `g`.
    pub fn name_of(&self, g: GroupId) -> Option<&str> {
        self.groups.get(g as usize).map(|g| &*g.name)
    }

    /// The group names of an identity, in config order (for the decision log).
    pub fn names_of(&self, id: &Identity) -> Vec<Arc<str>> {
        id.groups
            .iter()
            .map(|&g| self.groups[g as usize].name.clone())
            .collect()
    }
}

/// Does the header use the Basic scheme (well-formed or not)?
fn is_basic(header: &ProxyAuth) -> bool {
    let v = header.0.trim_start();
    v.get(..5).is_some_and(|s| s.eq_ignore_ascii_case("basic"))
        && v[5..].chars().next().is_none_or(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> ClientGroups {
        let mut g = ClientGroups::default();
        g.add("castai", vec!["10.1.0.0/16".parse().unwrap()]);
        g.add(
            "cloudcasa",
            vec!["10.2.0.0/16".parse().unwrap(), "fd00::/8".parse().unwrap()],
        );
        g.add("nodes", vec!["10.0.0.0/8".parse().unwrap()]);
        g
    }

    #[test]
    fn source_address_selects_every_containing_group() {
        let g = groups();
        let names = |ip: &str| g.names_of(&g.identify(ip.parse().unwrap()));
        let s = |v: Vec<Arc<str>>| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(s(names("10.1.2.3")), ["castai", "nodes"]);
        assert_eq!(s(names("10.2.0.1")), ["cloudcasa", "nodes"]);
        assert_eq!(s(names("::ffff:10.2.0.1")), ["cloudcasa", "nodes"]);
        assert_eq!(s(names("fd00::1")), ["cloudcasa"]);
        assert!(g.identify("192.168.1.1".parse().unwrap()).is_empty());
    }

    #[test]
    fn checked_headers_are_remembered_right_or_wrong() {
        use super::super::credentials::{tests::hash, User};
        use base64::Engine;
        let mut g = ClientGroups::default();
        let users = vec![User {
            name: "bob".into(),
            phc: hash("right"),
        }];
        let credentials = GroupCredentials {
            users,
            ..Default::default()
        };
        g.add_with_credentials("people", vec![], credentials);
        let basic = |password: &str| {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("bob:{password}"));
            ProxyAuth(format!("Basic {encoded}"))
        };
        let (right, wrong) = (basic("right"), basic("wrong"));
        // Not checked yet: a password check is needed for either.
        assert_eq!(g.known(Some(&right)), None);
        assert_eq!(g.known(Some(&wrong)), None);
        assert!(matches!(
            g.authenticate(Some(&right)),
            Credentials::Valid { .. }
        ));
        assert_eq!(g.authenticate(Some(&wrong)), Credentials::Invalid);
        // Both answers are now known without another check.
        assert!(matches!(
            g.known(Some(&right)),
            Some(Credentials::Valid { .. })
        ));
        assert_eq!(g.known(Some(&wrong)), Some(Credentials::Invalid));
        assert_eq!(g.known(Some(&basic("other"))), None);
    }

    #[test]
    fn every_basic_header_costs_the_same_checks() {
        use super::super::credentials::{tests::hash, User};
        use base64::Engine;
        let user = |name: &str, password: &str| User {
            name: name.into(),
            phc: hash(password),
        };
        let mut g = ClientGroups::default();
        let people = GroupCredentials {
            users: vec![user("bob", "right"), user("alice", "a")],
            ..Default::default()
        };
        g.add_with_credentials("people", vec![], people);
        // bob is in two groups: every Basic header gets two checks.
        let admins = GroupCredentials {
            users: vec![user("bob", "admin")],
            ..Default::default()
        };
        g.add_with_credentials("admins", vec![], admins);
        let basic = |text: &str| {
            ProxyAuth(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(text)
            ))
        };
        let mut before = g.password_verifications();
        let mut checks = |h: ProxyAuth, g: &ClientGroups| {
            let c = g.authenticate(Some(&h));
            let now = g.password_verifications();
            let n = now - before;
            before = now;
            (c, n)
        };
        for (header, valid) in [
            (basic("nobody:x"), false),
            (basic("bob:wrong"), false),
            (basic("alice:wrong"), false),
            (basic("alice:a"), true),
            (basic("bob:admin"), true),
            (basic(":"), false),
            (ProxyAuth("Basic !!!".into()), false),
            (ProxyAuth("basic".into()), false),
        ] {
            let (c, n) = checks(header, &g);
            assert_eq!(n, 2, "{c:?}");
            assert_eq!(matches!(c, Credentials::Valid { .. }), valid, "{c:?}");
        }
        // Bearer tokens and other schemes involve no password.
        assert_eq!(checks(ProxyAuth("Bearer t".into()), &g).1, 0);
        assert_eq!(checks(ProxyAuth("Digest x".into()), &g).1, 0);
    }

    #[test]
    fn membership_by_name() {
        let g = groups();
        let id = g.member_of("cloudcasa").unwrap();
        assert!(id.in_any(&[1]) && !id.in_any(&[0, 2]));
        assert!(g.member_of("nosuch").is_none());
    }
}
