//! Which embedded vendor profiles list a destination, for the refusals no rule matched: when the host is an
//! endpoint of a profile the configuration does not use, the refusal's detail names the profile and its
//! entries (`listed by profile castai-eu (api); add it to vendors`), and `egressd audit --suggest` proposes
//! the profile instead of a host rule.
//!
//! The index (host → the profile entries naming it) is built once from the embedded profiles; a lookup is a
//! hash of the normalized host. Entries whose hosts are parameters (`{storage}`) name nobody's host in
//! particular and are not indexed. Pure: no I/O.

use super::path_allowed;
use crate::target::{normalize_host, Host, Target};
use crate::vendors::{self, Profile};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// Profiles named in one detail before "and N more".
const NAMED: usize = 3;

/// One profile entry that lists a host.
#[derive(Debug, Clone, Copy)]
pub struct Listing {
    pub profile: &'static Profile,
    /// The entry name: the rule would be `<profile>/<entry>`.
    pub entry: &'static str,
    /// The entry's ports (`[443]` when the profile leaves them out).
    pub ports: &'static [u16],
    /// The entry's path prefixes (plain HTTP only); empty for any path.
    pub paths: &'static [String],
}

impl Listing {
    /// Would the entry, as a rule, let this request through (port, and for plain HTTP the path)?
    fn covers(&self, port: u16, path: Option<&str>) -> bool {
        let port_ok = self.ports.contains(&port);
        let path_ok = match path {
            Some(p) if !self.paths.is_empty() => self.paths.iter().any(|pre| path_allowed(pre, p)),
            _ => true,
        };
        port_ok && path_ok
    }
}

const DEFAULT_PORTS: &[u16] = &[443];

fn index() -> &'static HashMap<Host, Vec<Listing>> {
    static INDEX: OnceLock<HashMap<Host, Vec<Listing>>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut map: HashMap<Host, Vec<Listing>> = HashMap::new();
        for profile in vendors::all() {
            for e in &profile.entries {
                for h in e.hosts.iter().filter(|h| !h.contains('{')) {
                    // The embedded profiles are checked by tests; a host that does not normalize is skipped
                    // rather than guessed at.
                    let Ok(host) = normalize_host(h) else {
                        continue;
                    };
                    map.entry(host).or_default().push(Listing {
                        profile,
                        entry: &e.name,
                        ports: if e.ports.is_empty() {
                            DEFAULT_PORTS
                        } else {
                            &e.ports
                        },
                        paths: &e.paths,
                    });
                }
            }
        }
        map
    })
}

/// Every profile entry that lists `host` and would let a request to `port` (and `path`, for plain HTTP)
/// through, in profile order.
pub fn listings(host: &Host, port: u16, path: Option<&str>) -> Vec<Listing> {
    index()
        .get(host)
        .map(|l| l.iter().filter(|l| l.covers(port, path)).copied().collect())
        .unwrap_or_default()
}

/// A profile and its entries that list one destination.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub profile: &'static Profile,
    pub entries: Vec<&'static str>,
}

impl Candidate {
    /// `castai-eu (node-components, node-logs)`.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.profile.name, self.entries.join(", "))
    }

    /// The names of the profile's required parameters.
    pub fn required_params(&self) -> Vec<&'static str> {
        self.profile
            .required_params()
            .map(|p| p.name.as_str())
            .collect()
    }
}

/// The profiles the configuration does not use that list this destination, one [`Candidate`] each, in
/// profile order. Empty when no profile lists it, and also when a profile in use does: then the profile's
/// entry was left out (`vendors_disable`) or scoped to other clients, and adding another profile is not the
/// fix.
pub fn unused_candidates(
    host: &Host,
    port: u16,
    path: Option<&str>,
    in_use: &[Arc<str>],
) -> Vec<Candidate> {
    let found = listings(host, port, path);
    if found
        .iter()
        .any(|l| in_use.iter().any(|u| **u == l.profile.name))
    {
        return Vec::new();
    }
    let mut out: Vec<Candidate> = Vec::new();
    for l in found {
        match out.iter_mut().find(|c| std::ptr::eq(c.profile, l.profile)) {
            Some(c) => c.entries.push(l.entry),
            None => out.push(Candidate {
                profile: l.profile,
                entries: vec![l.entry],
            }),
        }
    }
    out
}

/// The hint a `denied_no_rule` refusal's detail ends with, or `None` when no unused profile lists the
/// destination: `listed by profile castai-eu (api); add it to vendors`, with the required parameters named
/// when the profile has some, and at most three profiles named.
pub fn hint(target: &Target, path: Option<&str>, in_use: &[Arc<str>]) -> Option<String> {
    let found = unused_candidates(&target.host, target.port, path, in_use);
    match found.as_slice() {
        [] => None,
        [one] => {
            let params = one.required_params();
            let needs = if params.is_empty() {
                String::new()
            } else {
                format!(" (it needs params: {})", params.join(", "))
            };
            Some(format!(
                "listed by profile {}; add it to vendors{needs}",
                one.describe()
            ))
        }
        many => {
            let mut names: Vec<String> = many.iter().take(NAMED).map(Candidate::describe).collect();
            if many.len() > NAMED {
                names.push(format!("{} more", many.len() - NAMED));
            }
            Some(format!(
                "listed by profiles {}; add the one for these agents to vendors",
                names.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::parse_authority;

    fn t(s: &str) -> Target {
        parse_authority(s, None).unwrap()
    }

    fn used(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn an_unused_profile_is_named_with_its_entry() {
        assert_eq!(
            hint(&t("api.eu.cast.ai:443"), None, &used(&["castai-us"])).as_deref(),
            Some("listed by profile castai-eu (api); add it to vendors")
        );
        assert_eq!(
            hint(&t("kvisor.prod-eu.cast.ai:443"), None, &[]).as_deref(),
            Some("listed by profile castai-eu (kvisor); add it to vendors")
        );
        // Required parameters are named.
        assert_eq!(
            hint(&t("agent.cloudcasa.io:443"), None, &[]).as_deref(),
            Some(
                "listed by profile cloudcasa (agent); add it to vendors (it needs params: storage)"
            )
        );
        // IP literals of a profile are found too.
        let ip = hint(&t("104.16.81.56:443"), None, &[]).unwrap();
        assert!(
            ip.starts_with("listed by profiles castai-us (fallback-ips), castai-eu (fallback-ips)"),
            "{ip}"
        );
    }

    #[test]
    fn several_profiles_are_all_named_with_every_entry() {
        let h = hint(&t("api.cloudcasa.io:443"), None, &[]).unwrap();
        assert_eq!(
            h,
            "listed by profiles cloudcasa (api), cloudcasa-ui (web); add the one for these agents to vendors"
        );
        let h = hint(&t("storage.googleapis.com:443"), None, &[]).unwrap();
        assert_eq!(
            h,
            "listed by profiles castai-us (node-components, node-logs), castai-eu (node-components, \
             node-logs); add the one for these agents to vendors"
        );
    }

    #[test]
    fn no_hint_where_the_profile_would_not_help_or_is_in_use() {
        // Not a profile host; another port; a path the entries do not cover.
        assert_eq!(hint(&t("example.com:443"), None, &[]), None);
        assert_eq!(hint(&t("api.eu.cast.ai:80"), None, &[]), None);
        assert_eq!(
            hint(&t("storage.googleapis.com:443"), Some("/other/x"), &[]),
            None
        );
        assert!(hint(
            &t("storage.googleapis.com:443"),
            Some("/castai-node-logs-sender/a"),
            &[]
        )
        .is_some());
        // A profile in use lists it: its entry is disabled or scoped, and another profile is not the fix.
        assert_eq!(
            hint(&t("us-docker.pkg.dev:443"), None, &used(&["castai-us"])),
            None
        );
        // Parameter entries name nobody's host.
        assert!(index().keys().all(|h| !h.to_string().contains('{')));
    }

    #[test]
    fn names_are_normalized_like_targets() {
        let upper = parse_authority("API.EU.CAST.AI.:443", None).unwrap();
        assert!(hint(&upper, None, &[]).is_some());
    }
}
