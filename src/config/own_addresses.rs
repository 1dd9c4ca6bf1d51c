//! Compiling a rule's `private_cidrs` (and a vendor item's, for the entries made from its parameters) into a
//! per-rule exception ([`crate::policy::own_addresses`]), and the `validate` warnings for profile parameters
//! whose addresses egressd would refuse.

use super::raw::RawRule;
use crate::policy::own_addresses::{check_cidr, check_host, OwnAddresses};
use crate::policy::special_ip::special_purpose;
use crate::policy::PortSet;
use crate::target::Host;
use crate::vendors::Profile;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

/// Is the profile rule `<profile>/<entry>` made from a parameter (the vendor's own endpoint, named by the user)?
pub(super) fn is_param_entry(profile: &Profile, rule: &str) -> bool {
    let entry = rule.rsplit('/').next().unwrap_or_default();
    profile
        .entries
        .iter()
        .find(|e| e.name == entry)
        .is_some_and(|e| e.hosts.iter().any(|h| h.contains('{')))
}

/// The exception of one rule, if it has `private_cidrs`; errors as (key under the rule, message).
pub(super) fn compile(
    rule: &RawRule,
    allow: bool,
    ports: PortSet,
) -> Result<Option<OwnAddresses>, Vec<(String, String)>> {
    if rule.private_cidrs.is_empty() {
        return Ok(None);
    }
    let mut errs = Vec::new();
    if !allow {
        errs.push((
            "private_cidrs".to_string(),
            "private_cidrs apply to allow rules only".to_string(),
        ));
    }
    if rule.no_proxy.is_some() {
        errs.push((
            "private_cidrs".to_string(),
            "a rule with private_cidrs names its hosts exactly in `hosts`, not with `no_proxy`"
                .to_string(),
        ));
    }
    let mut cidrs = Vec::new();
    for (i, c) in rule.private_cidrs.iter().enumerate() {
        let parsed = c
            .parse::<IpNet>()
            .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
            .map(|n| n.trunc());
        match parsed {
            Err(_) => errs.push((
                format!("private_cidrs[{i}]"),
                format!("{c:?} is not a CIDR or IP address"),
            )),
            Ok(n) => match check_cidr(&n) {
                Ok(()) => cidrs.push(n),
                Err(m) => errs.push((format!("private_cidrs[{i}]"), m)),
            },
        }
    }
    let mut hosts = Vec::new();
    for (i, h) in rule.hosts.iter().enumerate() {
        match check_host(h) {
            Ok(host) => hosts.push(host),
            Err(m) => errs.push((format!("hosts[{i}]"), m)),
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Some(OwnAddresses {
        rule: rule.name.clone(),
        hosts,
        ports,
        cidrs,
    }))
}

/// `validate` warnings: a profile parameter names an address (literally, or through `dns.hosts`) that egressd
/// refuses, because it is special-purpose and neither `destinations.allow_cidrs` nor the item's
/// `private_cidrs` exempts it. Names resolved by DNS are checked by `egressd check --resolve`.
pub(super) fn param_warnings(
    vendor_rules: &[(String, RawRule)],
    allow_cidrs: &[IpNet],
    own: &[OwnAddresses],
    static_hosts: &HashMap<String, Vec<IpAddr>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (path, rule) in vendor_rules {
        let Some(profile) = rule.name.split('/').next().and_then(crate::vendors::find) else {
            continue;
        };
        if !is_param_entry(profile, &rule.name) {
            continue;
        }
        for h in &rule.hosts {
            let Ok(host) = crate::target::normalize_host(h) else {
                continue;
            };
            let addrs = match &host {
                Host::Ip(ip) => vec![*ip],
                Host::Name(n) => static_hosts.get(n).cloned().unwrap_or_default(),
            };
            for ip in addrs {
                let Some(range) = special_purpose(ip) else {
                    continue;
                };
                if allow_cidrs.iter().any(|n| n.contains(&ip)) {
                    continue;
                }
                let exempt = own.iter().any(|e| {
                    e.rule == rule.name
                        && e.hosts.contains(&host)
                        && e.cidrs.iter().any(|n| n.contains(&ip))
                });
                if exempt {
                    continue;
                }
                let fix = if check_cidr(&IpNet::from(ip)).is_ok() {
                    format!(
                        "add {ip}/{} to the item's private_cidrs",
                        if ip.is_ipv4() { 32 } else { 128 }
                    )
                } else {
                    "it can never be exempted: give the address the vendor's endpoint has on your network"
                        .to_string()
                };
                out.push(format!(
                    "{path}: parameter host {h} is {ip}, in {} ({}): egressd refuses it (denied_private_address); {fix}",
                    range.cidr, range.name
                ));
            }
        }
    }
    out
}
