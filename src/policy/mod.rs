//! The allowlist policy: a pure function of the normalized target and the compiled rules. No I/O here.
//!
//! Rules are named. A deny rule that matches host and port beats every allow rule; otherwise the first
//! allow rule (in config order) that matches host and port allows; otherwise the default is deny.
//! Hostname targets are matched only by name patterns, IP-literal targets only by IP/CIDR patterns.
//!
//! A rule in report mode never refuses anything itself: a report-mode deny rule that matches is passed over
//! (the rest of the policy decides) and, if the request goes through, it is a would-be denial by that rule; a
//! report-mode allow rule whose host matches but whose ports or paths do not lets the request through as a
//! would-be denial. Such decisions carry `report: true` and are logged as `would_deny`. A report-mode allow
//! rule is a trial: an enforcing allow rule that also matches the request decides it, and the trial rule's
//! leniency (its SNI checks reported, not enforced) applies only where no enforcing allow rule matches host
//! and port.
//!
//! A rule scoped to client groups (`clients:`) is considered only for requests whose identity contains one of
//! them; an unidentified client sees only the unscoped rules, or is refused outright with `require_identity`.

pub mod clients;
pub mod credentials;
pub mod destination;
pub mod first_bytes;
mod host;
mod ip;
pub mod own_addresses;
pub mod path;
pub mod pattern;
pub mod route;
pub mod special_ip;
pub mod tls;
pub mod transparent;
pub mod vendor_hint;
pub mod verdict;
pub mod workload;

use crate::noproxy;
use crate::reason::Reason;
use crate::target::{Host, Target};
pub use clients::{ClientGroups, Credentials, GroupId, Identity};
use ipnet::IpNet;
use std::ops::RangeInclusive;
use std::sync::Arc;

pub use pattern::{parse_pattern, Pattern};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Allow,
    Deny,
}

/// Ports a rule applies to: a list of inclusive ranges; empty means every port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSet(Vec<RangeInclusive<u16>>);

impl PortSet {
    pub fn any() -> Self {
        PortSet(Vec::new())
    }
    pub fn from_ranges(ranges: Vec<RangeInclusive<u16>>) -> Self {
        PortSet(ranges)
    }
    pub fn contains(&self, port: u16) -> bool {
        self.0.is_empty() || self.0.iter().any(|r| r.contains(&port))
    }
}

#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    kind: RuleKind,
    ports: PortSet,
    /// `tls: true|false` on the rule; `None` means TLS is required on port 443 only.
    tls: Option<bool>,
    /// Path prefixes for plain-HTTP requests; empty means any path. CONNECT carries no path, so a CONNECT to the
    /// host is allowed whatever this says (the config compiler warns about it).
    paths: Vec<Box<str>>,
    idle: Option<IdleOverride>,
    /// `mode: report`: what this rule would refuse is let through and reported.
    report: bool,
    /// Client groups the rule applies to; empty means every client.
    clients: Vec<GroupId>,
}

/// A rule's own idle timeout for tunnels, replacing the global `timeouts.idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleOverride {
    After(std::time::Duration),
    /// Never closed for idleness (long-lived control connections); TCP keepalive still detects dead peers.
    Never,
}

impl IdleOverride {
    /// The idle timeout to apply, given the global one. `Never` is a duration too long to ever elapse.
    pub fn resolve(idle: Option<IdleOverride>, global: std::time::Duration) -> std::time::Duration {
        match idle {
            None => global,
            Some(IdleOverride::After(d)) => d,
            Some(IdleOverride::Never) => std::time::Duration::MAX,
        }
    }
}

pub use path::allowed as path_allowed;

/// One pattern's link to its rule; `port` is set for NO_PROXY `host:port` entries, which pin one port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RuleRef {
    rule: u32,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub rule: Option<Arc<str>>,
    pub reason: Reason,
    /// The deciding allow rule's `tls` setting.
    pub tls: Option<bool>,
    /// The allowing rule's own idle timeout, if it has one.
    pub idle: Option<IdleOverride>,
    /// A denial (`allowed: false`) by a rule in report mode: the request proceeds (with `tls` and `idle` of
    /// the rule that lets it through) as a would-be denial.
    pub report: bool,
    /// The rule the request proceeds on is in report mode, so its later refusals (the SNI checks) are
    /// would-be denials too.
    pub lenient: bool,
}

impl Decision {
    fn allow(rule: &Rule) -> Self {
        Decision {
            allowed: true,
            rule: Some(rule.name.clone()),
            reason: Reason::Allowed,
            tls: rule.tls,
            idle: rule.idle,
            report: false,
            lenient: rule.report,
        }
    }
    pub fn deny(reason: Reason, rule: Option<Arc<str>>) -> Self {
        Decision {
            allowed: false,
            rule,
            reason,
            tls: None,
            idle: None,
            report: false,
            lenient: false,
        }
    }

    /// A denial by a rule in report mode, let through with `through`'s settings.
    fn report(reason: Reason, rule: Arc<str>, through: &Rule) -> Self {
        Decision {
            allowed: false,
            rule: Some(rule),
            reason,
            tls: through.tls,
            idle: through.idle,
            report: true,
            lenient: through.report,
        }
    }
}

#[derive(Default)]
pub struct Policy {
    pub clients: ClientGroups,
    /// Refuse requests from clients that belong to no group.
    require_identity: bool,
    /// `mode: report` for the whole configuration.
    report_all: bool,
    rules: Vec<Rule>,
    names: host::NameIndex,
    ips: ip::IpIndex,
    /// Which addresses may be dialled (special-purpose ranges minus exceptions).
    destinations: destination::Destinations,
    /// The vendor profiles the configuration selects (`vendors:`), for the hints of refusals.
    vendors: Vec<Arc<str>>,
}

/// Builds a [`Policy`]; the config compiler feeds it already-validated patterns.
#[derive(Default)]
pub struct PolicyBuilder {
    policy: Policy,
}

#[derive(Debug, Clone, Copy)]
pub struct RuleId(u32);

impl PolicyBuilder {
    pub fn rule(&mut self, name: &str, kind: RuleKind, ports: PortSet) -> RuleId {
        let id = self.policy.rules.len() as u32;
        self.policy.rules.push(Rule {
            name: name.into(),
            kind,
            ports,
            tls: None,
            paths: Vec::new(),
            idle: None,
            report: false,
            clients: Vec::new(),
        });
        RuleId(id)
    }

    /// Scope a rule to these client groups.
    pub fn rule_clients(&mut self, rule: RuleId, groups: Vec<GroupId>) {
        self.policy.rules[rule.0 as usize].clients = groups;
    }

    /// A client group by name, for scoping rules.
    pub fn client_group(&self, name: &str) -> Option<GroupId> {
        self.policy.clients.find(name)
    }

    /// The client groups that rules may be scoped to.
    /// `mode: report`: every policy denial is a would-be denial.
    pub fn report_all(&mut self, on: bool) {
        self.policy.report_all = on;
    }

    pub fn clients(&mut self, groups: ClientGroups, require_identity: bool) {
        self.policy.clients = groups;
        self.policy.require_identity = require_identity;
    }

    /// Put a rule in report mode (see the module documentation).
    pub fn rule_report(&mut self, rule: RuleId) {
        self.policy.rules[rule.0 as usize].report = true;
    }

    pub fn set_tls(&mut self, rule: RuleId, tls: bool) {
        self.policy.rules[rule.0 as usize].tls = Some(tls);
    }

    /// Restrict an allow rule to these path prefixes (plain HTTP only).
    pub fn rule_paths(&mut self, rule: RuleId, paths: &[String]) {
        self.policy.rules[rule.0 as usize].paths =
            paths.iter().map(|p| p.as_str().into()).collect();
    }

    /// Give a rule its own tunnel idle timeout.
    pub fn rule_idle(&mut self, rule: RuleId, idle: IdleOverride) {
        self.policy.rules[rule.0 as usize].idle = Some(idle);
    }

    pub fn pattern(&mut self, rule: RuleId, p: &Pattern) -> Result<(), String> {
        let r = RuleRef {
            rule: rule.0,
            port: None,
        };
        match p {
            Pattern::Exact(n) => self.policy.names.add_exact(n, r),
            Pattern::Suffix { name, include_apex } => {
                self.policy.names.add_suffix(name, *include_apex, r)
            }
            Pattern::Glob(g) => self
                .policy
                .names
                .add_glob(g, r)
                .map_err(|e| format!("{g:?} is not a valid glob: {e}"))?,
            Pattern::Net(n) => self.policy.ips.add(*n, r),
        }
        Ok(())
    }

    /// Adds one parsed NO_PROXY entry. `*` is refused by the caller before this point.
    pub fn no_proxy_entry(&mut self, rule: RuleId, e: &noproxy::Entry) {
        let with_port = |port| RuleRef { rule: rule.0, port };
        match e {
            noproxy::Entry::Any => {}
            noproxy::Entry::Cidr(n) => self.policy.ips.add(n.trunc(), with_port(None)),
            noproxy::Entry::Ip { ip, port } => {
                self.policy.ips.add(IpNet::from(*ip), with_port(*port))
            }
            noproxy::Entry::Domain {
                name,
                include_apex,
                port,
            } => self
                .policy
                .names
                .add_suffix(name, *include_apex, with_port(*port)),
        }
    }

    /// The vendor profiles the configuration selects.
    pub fn vendors(&mut self, names: Vec<Arc<str>>) {
        self.policy.vendors = names;
    }

    /// Which addresses may be dialled: `destinations.allow_cidrs` and the rules' `private_cidrs`.
    pub fn destinations(&mut self, d: destination::Destinations) {
        self.policy.destinations = d;
    }

    pub fn build(mut self) -> Result<Policy, String> {
        self.policy
            .names
            .finish()
            .map_err(|e| format!("building the glob set: {e}"))?;
        Ok(self.policy)
    }
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Policy {
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Every rule's name and kind, in the order they are checked: local allow rules, profile rules, deny
    /// rules.
    pub fn rules(&self) -> impl Iterator<Item = (&Arc<str>, RuleKind)> {
        self.rules.iter().map(|r| (&r.name, r.kind))
    }

    /// The vendor profiles the configuration selects (`vendors:`), in config order.
    pub fn vendors(&self) -> &[Arc<str>] {
        &self.vendors
    }

    /// For a request no rule matched: the embedded vendor profiles, not selected here, that list its
    /// destination (see [`vendor_hint`]).
    pub fn vendor_hint(&self, target: &Target, path: Option<&str>) -> Option<String> {
        vendor_hint::hint(target, path, &self.vendors)
    }

    /// The names of the deny rules and of the client groups: what a reload must not drop unnoticed, since
    /// losing one makes the configuration in force more open.
    pub fn guard_names(&self) -> (Vec<Arc<str>>, Vec<String>) {
        let deny = self
            .rules
            .iter()
            .filter(|r| matches!(r.kind, RuleKind::Deny))
            .map(|r| r.name.clone())
            .collect();
        (deny, self.clients.names().map(str::to_string).collect())
    }

    /// The long-lived allow rules (`idle_timeout: none`): vendors' control connections.
    pub fn long_lived_rules(&self) -> impl Iterator<Item = &str> {
        (self.rules.iter())
            .filter(|r| matches!(r.kind, RuleKind::Allow) && r.idle == Some(IdleOverride::Never))
            .map(|r| &*r.name)
    }

    /// The decision for an unidentified client's target without a request path (CONNECT).
    pub fn decide(&self, target: &Target) -> Decision {
        self.decide_request(target, None, &Identity::default())
    }

    /// The decision for a target and, for plain-HTTP requests, the request path (`/a/b?q`), as seen by a
    /// client with this identity. An allow rule with path prefixes allows only matching paths when a path is
    /// given; it allows the host when none is.
    pub fn decide_request(&self, target: &Target, path: Option<&str>, id: &Identity) -> Decision {
        let d = self.decide_by_rules(target, path, id);
        // Report mode for everyone (`mode: report`) or for the client's group (`clients[].mode: report`):
        // policy denials become would-be denials, and so do the later checks of what proceeds (SNI).
        if !(self.report_all || self.clients.reports(id)) {
            return d;
        }
        Decision {
            report: d.report || (!d.allowed && d.reason.is_policy_denial()),
            lenient: true,
            ..d
        }
    }

    fn decide_by_rules(&self, target: &Target, path: Option<&str>, id: &Identity) -> Decision {
        if self.require_identity && id.is_empty() {
            return Decision::deny(Reason::DeniedNoIdentity, None);
        }
        // Best match so far, by rule order: deny beats a host-and-port allow, which beats a host-and-port
        // allow whose paths do not match, which beats a host-only allow.
        let mut deny: Option<u32> = None;
        let mut report_deny: Option<u32> = None;
        let mut allow: Option<u32> = None;
        // A report-mode allow rule is a trial: it decides only where no enforcing allow rule does.
        let mut trial_allow: Option<u32> = None;
        // Some enforcing allow rule matches host and port: its SNI checks must hold, whatever trial rule
        // also matches.
        let mut enforcing = false;
        let mut wrong_path: Option<u32> = None;
        let mut host_only: Option<u32> = None;
        let port = target.port;
        let mut consider = |r: &RuleRef| {
            let rule = &self.rules[r.rule as usize];
            if !rule.clients.is_empty() && !id.in_any(&rule.clients) {
                return;
            }
            let port_ok = rule.ports.contains(port) && r.port.is_none_or(|p| p == port);
            let path_ok = match path {
                Some(p) if !rule.paths.is_empty() => {
                    rule.paths.iter().any(|prefix| path_allowed(prefix, p))
                }
                _ => true,
            };
            if rule.kind == RuleKind::Allow && port_ok && !rule.report {
                enforcing = true;
            }
            let slot = match (rule.kind, port_ok, path_ok) {
                (RuleKind::Deny, true, _) if rule.report => &mut report_deny,
                (RuleKind::Deny, true, _) => &mut deny,
                (RuleKind::Allow, true, true) if rule.report => &mut trial_allow,
                (RuleKind::Allow, true, true) => &mut allow,
                (RuleKind::Allow, true, false) => &mut wrong_path,
                (RuleKind::Allow, false, _) => &mut host_only,
                (RuleKind::Deny, false, _) => return,
            };
            if slot.is_none_or(|s| r.rule < s) {
                *slot = Some(r.rule);
            }
        };
        match &target.host {
            Host::Name(n) => self.names.for_each_match(n, &mut consider),
            Host::Ip(ip) => self.ips.for_each_match(*ip, &mut consider),
        }
        let rule = |i: u32| &self.rules[i as usize];
        let allow = allow.or(trial_allow);
        let decision = match (deny, allow, wrong_path, host_only) {
            (Some(d), _, _, _) => Decision::deny(Reason::DeniedByRule, Some(rule(d).name.clone())),
            (None, Some(a), _, _) => Decision::allow(rule(a)),
            (None, None, Some(p), _) if rule(p).report => {
                Decision::report(Reason::DeniedPath, rule(p).name.clone(), rule(p))
            }
            (None, None, Some(p), _) => {
                Decision::deny(Reason::DeniedPath, Some(rule(p).name.clone()))
            }
            (None, None, None, Some(h)) if rule(h).report => {
                Decision::report(Reason::DeniedPort, rule(h).name.clone(), rule(h))
            }
            (None, None, None, Some(h)) => {
                Decision::deny(Reason::DeniedPort, Some(rule(h).name.clone()))
            }
            // An IP literal that no rule names, in a special-purpose range: a metadata or internal-network
            // probe, which is worth telling apart from an ordinary unlisted destination.
            (None, None, None, None) if self.private_literal(target).is_some() => {
                Decision::deny(Reason::DeniedPrivateAddress, None)
            }
            (None, None, None, None) => Decision::deny(Reason::DeniedNoRule, None),
        };
        let decision = Decision {
            lenient: decision.lenient && !enforcing,
            ..decision
        };
        // A report-mode deny rule that matched: where the rest of the policy lets the request through, it
        // is that rule's would-be denial.
        match report_deny {
            Some(d) if decision.allowed || decision.report => Decision {
                allowed: false,
                rule: Some(rule(d).name.clone()),
                reason: Reason::DeniedByRule,
                report: true,
                ..decision
            },
            _ => decision,
        }
    }

    /// Why an IP-literal target may not be dialled (special-purpose, not in `destinations.allow_cidrs`), or
    /// `None` for names and for addresses that may be dialled.
    pub fn private_literal(&self, target: &Target) -> Option<String> {
        self.destinations.literal(target)
    }

    /// The destination check the addresses of allowed requests must pass.
    pub fn destinations(&self) -> &destination::Destinations {
        &self.destinations
    }

    /// Would some credentials let this request through? True when the request is refused as it stands but a
    /// member of one of the credential-based groups would be allowed: the client should be asked to
    /// authenticate (407) rather than refused.
    pub fn credentials_would_help(
        &self,
        target: &Target,
        path: Option<&str>,
        id: &Identity,
    ) -> bool {
        self.clients.credential_groups().any(|g| {
            let mut with = id.clone();
            with.add_all(&[g]);
            with != *id && self.decide_request(target, path, &with).allowed
        })
    }

    /// Names and path prefixes of the allow rules that restrict paths (for the startup warning).
    pub fn path_rules(&self) -> impl Iterator<Item = (&str, &[Box<str>])> {
        self.rules
            .iter()
            .filter(|r| !r.paths.is_empty())
            .map(|r| (&*r.name, r.paths.as_slice()))
    }
}

#[cfg(test)]
mod tests;
