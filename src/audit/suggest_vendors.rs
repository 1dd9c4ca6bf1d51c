//! `--suggest` for refused destinations that an embedded vendor profile lists: the profile, as a `vendors:`
//! item, instead of host rules. The profile brings the vendor's other endpoints, their purposes and idle
//! timeouts, and its rule names in the logs.
//!
//! A destination listed by one profile proposes that profile. One listed by several (`us-docker.pkg.dev`
//! by both CAST AI profiles) goes with a profile already proposed for another destination; when none is,
//! which vendor's agents asked is not known, so it keeps its host rule with a comment naming the profiles.
//! Profiles the configuration uses (`--config`) are never proposed, and a destination one of them lists keeps
//! its host rule: its entry was disabled or scoped to other clients, and another profile is not the fix.

use super::seen::Seen;
use crate::policy::vendor_hint::{unused_candidates, Candidate};
use crate::target::normalize_host;
use crate::vendors::Profile;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One profile to add to `vendors:`.
#[derive(Debug)]
pub struct Proposal {
    pub profile: &'static Profile,
    /// `host:port (entry)` of each refused destination it covers.
    pub covers: BTreeSet<String>,
    /// What was seen for those destinations together.
    pub seen: Seen,
}

impl Proposal {
    /// The `vendors:` item: the name, or with placeholders for the required parameters, which only the
    /// operator knows (a placeholder is not a valid host, so the snippet does not compile until it is filled).
    pub fn item(&self) -> String {
        let required: Vec<String> = self
            .profile
            .required_params()
            .map(|p| {
                if p.list {
                    format!("{}: [\"<{}>\"]", p.name, p.name)
                } else {
                    format!("{}: \"<{}>\"", p.name, p.name)
                }
            })
            .collect();
        if required.is_empty() {
            self.profile.name.clone()
        } else {
            format!(
                "{{name: {}, params: {{{}}}}}",
                self.profile.name,
                required.join(", ")
            )
        }
    }

    /// The required parameters' names.
    pub fn placeholders(&self) -> Vec<&str> {
        self.profile
            .required_params()
            .map(|p| p.name.as_str())
            .collect()
    }
}

/// The refused destinations split into profiles to propose and the rest (host rules as before).
#[derive(Debug, Default)]
pub struct Split {
    pub proposals: Vec<Proposal>,
    /// Destinations no proposed profile covers, by (host, port).
    pub rest: BTreeMap<(String, u16), Seen>,
    /// Hosts kept as host rules although several profiles list them: `castai-us (registry), castai-eu
    /// (registry)`.
    pub also_listed: BTreeMap<String, String>,
}

fn list(c: &[Candidate]) -> String {
    c.iter()
        .map(Candidate::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn split(by_authority: BTreeMap<(String, u16), Seen>, in_use: &[Arc<str>]) -> Split {
    let mut out = Split::default();
    let mut several = Vec::new();
    for ((host, port), seen) in by_authority {
        let candidates = match normalize_host(&host) {
            Ok(h) => unused_candidates(&h, port, None, in_use),
            Err(_) => Vec::new(),
        };
        match candidates.as_slice() {
            [] => {
                out.rest.insert((host, port), seen);
            }
            [one] => propose(&mut out.proposals, one, &host, port, seen),
            _ => several.push((host, port, seen, candidates)),
        }
    }
    for (host, port, seen, candidates) in several {
        let proposed = candidates.iter().find(|c| {
            out.proposals
                .iter()
                .any(|p| std::ptr::eq(p.profile, c.profile))
        });
        match proposed {
            Some(c) => propose(&mut out.proposals, c, &host, port, seen),
            None => {
                out.also_listed.insert(host.clone(), list(&candidates));
                out.rest.insert((host, port), seen);
            }
        }
    }
    // In the order of the embedded profiles, like `egressd vendors`.
    let order = |p: &Proposal| {
        crate::vendors::all()
            .iter()
            .position(|x| std::ptr::eq(x, p.profile))
    };
    out.proposals.sort_by_key(order);
    out
}

fn propose(proposals: &mut Vec<Proposal>, c: &Candidate, host: &str, port: u16, seen: Seen) {
    let cover = format!("{} ({})", authority(host, port), c.entries.join(", "));
    match proposals
        .iter_mut()
        .find(|p| std::ptr::eq(p.profile, c.profile))
    {
        Some(p) => {
            p.covers.insert(cover);
            p.seen.merge(seen);
        }
        None => proposals.push(Proposal {
            profile: c.profile,
            covers: BTreeSet::from([cover]),
            seen,
        }),
    }
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(list: &[(&str, u16)]) -> BTreeMap<(String, u16), Seen> {
        list.iter()
            .map(|(h, p)| ((h.to_string(), *p), Seen::default()))
            .collect()
    }

    fn names(s: &Split) -> Vec<&str> {
        s.proposals
            .iter()
            .map(|p| p.profile.name.as_str())
            .collect()
    }

    #[test]
    fn a_profile_is_proposed_for_its_hosts_and_shared_hosts_follow_it() {
        let s = split(
            refused(&[
                ("api.eu.cast.ai", 443),
                ("us-docker.pkg.dev", 443),
                ("api.eu.cast.ai", 8443),
                ("logs.vendor.example", 443),
            ]),
            &[],
        );
        assert_eq!(names(&s), ["castai-eu"]);
        let covers: Vec<&str> = s.proposals[0].covers.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            covers,
            [
                "api.eu.cast.ai:443 (api)",
                "us-docker.pkg.dev:443 (registry)"
            ]
        );
        let rest: Vec<_> = s.rest.keys().cloned().collect();
        assert_eq!(
            rest,
            [
                ("api.eu.cast.ai".to_string(), 8443),
                ("logs.vendor.example".to_string(), 443)
            ]
        );
        assert!(s.also_listed.is_empty());
        assert_eq!(s.proposals[0].item(), "castai-eu");
    }

    #[test]
    fn a_host_only_several_profiles_list_keeps_its_rule_with_a_comment() {
        let s = split(refused(&[("us-docker.pkg.dev", 443)]), &[]);
        assert!(s.proposals.is_empty());
        assert_eq!(
            s.also_listed.get("us-docker.pkg.dev").map(String::as_str),
            Some("castai-us (registry), castai-eu (registry)")
        );
        assert_eq!(s.rest.len(), 1);
    }

    #[test]
    fn profiles_in_use_are_not_proposed_and_required_params_get_placeholders() {
        let in_use: Vec<Arc<str>> = vec!["castai-us".into()];
        let s = split(
            refused(&[("us-docker.pkg.dev", 443), ("agent.cloudcasa.io", 443)]),
            &in_use,
        );
        assert_eq!(names(&s), ["cloudcasa"]);
        assert_eq!(
            s.proposals[0].item(),
            "{name: cloudcasa, params: {storage: [\"<storage>\"]}}"
        );
        assert_eq!(s.proposals[0].placeholders(), ["storage"]);
        assert!(s.rest.contains_key(&("us-docker.pkg.dev".to_string(), 443)));
        assert!(s.also_listed.is_empty(), "listed by a profile in use");
    }
}
