//! The pod index: pod IP → workload identity, kept from the list and watch events. A lookup is one hash probe.
//!
//! What it gets right: only pods that own their address count (not `hostNetwork` pods, whose address is the
//! node's, and not finished pods, whose address the node may already have given to another pod); a deleted
//! pod's addresses are forgotten at once; an address that two live pods claim (an event order that has not
//! settled) belongs to neither until one of them lets it go.

use crate::policy::workload::Workload;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

/// Below this many kept strings, none are swept.
const SWEEP_MIN: usize = 1024;

/// What the index keeps of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEntry {
    pub uid: Arc<str>,
    /// The pod's own addresses (empty for pods that do not own one: see [`super::pod::entry`]).
    pub ips: Vec<IpAddr>,
    pub workload: Workload,
}

#[derive(Debug)]
enum Claim {
    One(Arc<str>, Arc<Workload>),
    /// Two or more live pods claim the address: nobody's until it is one again.
    Many(Vec<Arc<str>>),
}

/// Pod IP → workload, with the pods by uid to apply updates and deletions.
#[derive(Debug, Default)]
pub struct PodIndex {
    by_ip: HashMap<IpAddr, Claim>,
    by_uid: HashMap<Arc<str>, (Vec<IpAddr>, Arc<Workload>)>,
    /// Namespaces, service accounts and label keys and values, stored once however many pods share them.
    strings: HashSet<Arc<str>>,
    /// When `strings` grows past this, the ones no pod uses any more are let go.
    sweep_at: usize,
}

impl PodIndex {
    /// The workload whose pod owns `ip`, if exactly one live pod does.
    pub fn lookup(&self, ip: IpAddr) -> Option<Arc<Workload>> {
        match self.by_ip.get(&ip.to_canonical())? {
            Claim::One(_, w) => Some(w.clone()),
            Claim::Many(_) => None,
        }
    }

    /// Pods indexed (those that own an address).
    pub fn pods(&self) -> usize {
        self.by_uid.len()
    }

    /// Addresses claimed by more than one live pod.
    pub fn ambiguous(&self) -> usize {
        (self.by_ip.values())
            .filter(|c| matches!(c, Claim::Many(_)))
            .count()
    }

    /// A pod was added or changed. A pod that owns no address (any more) is removed.
    pub fn apply(&mut self, pod: PodEntry) {
        self.remove(&pod.uid);
        if pod.ips.is_empty() {
            return;
        }
        let workload = Arc::new(self.intern(pod.workload));
        let uid = pod.uid;
        for ip in &pod.ips {
            let claim = match self.by_ip.remove(ip) {
                None => Claim::One(uid.clone(), workload.clone()),
                Some(Claim::One(other, _)) => Claim::Many(vec![other, uid.clone()]),
                Some(Claim::Many(mut all)) => {
                    all.push(uid.clone());
                    Claim::Many(all)
                }
            };
            self.by_ip.insert(*ip, claim);
        }
        self.by_uid.insert(uid, (pod.ips, workload));
    }

    /// A pod was deleted: its addresses are forgotten (or, where another pod claims one too, left to it).
    pub fn remove(&mut self, uid: &str) {
        let Some((ips, _)) = self.by_uid.remove(uid) else {
            return;
        };
        for ip in ips {
            let Some(claim) = self.by_ip.remove(&ip) else {
                continue;
            };
            let rest = match claim {
                Claim::One(owner, w) if &*owner != uid => Some(Claim::One(owner, w)),
                Claim::One(..) => None,
                Claim::Many(mut all) => {
                    all.retain(|u| &**u != uid);
                    match all.as_slice() {
                        [] => None,
                        [only] => self
                            .by_uid
                            .get(only)
                            .map(|(_, w)| Claim::One(only.clone(), w.clone())),
                        _ => Some(Claim::Many(all)),
                    }
                }
            };
            if let Some(claim) = rest {
                self.by_ip.insert(ip, claim);
            }
        }
        // Strings no pod uses any more are let go whenever the kept ones have doubled since the last sweep,
        // so churn (label values such as pod-template-hash come and go with every rollout) does not grow the
        // index, and sweeping costs O(1) per removal over time.
        if self.strings.len() > self.sweep_at.max(SWEEP_MIN) {
            self.strings.retain(|s| Arc::strong_count(s) > 1);
            self.sweep_at = 2 * self.strings.len();
        }
    }

    /// The whole set of pods, from a (re)list: pods missing from it were deleted while nobody watched.
    pub fn replace(&mut self, pods: impl IntoIterator<Item = PodEntry>) {
        *self = PodIndex::default();
        for p in pods {
            self.apply(p);
        }
    }

    fn intern(&mut self, w: Workload) -> Workload {
        let mut one = |s: Arc<str>| match self.strings.get(&s) {
            Some(kept) => kept.clone(),
            None => {
                self.strings.insert(s.clone());
                s
            }
        };
        Workload {
            namespace: one(w.namespace),
            service_account: one(w.service_account),
            pod: w.pod,
            labels: (w.labels.into_iter())
                .map(|(k, v)| (one(k), one(v)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str, ips: &[&str]) -> PodEntry {
        PodEntry {
            uid: uid.into(),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            workload: Workload {
                namespace: "ns".into(),
                service_account: "sa".into(),
                pod: name.into(),
                labels: vec![("app".into(), name.into())],
            },
        }
    }

    fn owner(ix: &PodIndex, ip: &str) -> Option<String> {
        ix.lookup(ip.parse().unwrap()).map(|w| w.pod.to_string())
    }

    #[test]
    fn every_address_of_a_pod_is_found_ipv4_mapped_too() {
        let mut ix = PodIndex::default();
        ix.apply(pod("u1", "a", &["10.0.0.1", "fd00::1"]));
        assert_eq!(owner(&ix, "10.0.0.1").as_deref(), Some("a"));
        assert_eq!(owner(&ix, "::ffff:10.0.0.1").as_deref(), Some("a"));
        assert_eq!(owner(&ix, "fd00::1").as_deref(), Some("a"));
        assert_eq!(owner(&ix, "10.0.0.2"), None);
    }

    #[test]
    fn a_deleted_pods_address_is_forgotten_and_can_be_reused() {
        let mut ix = PodIndex::default();
        ix.apply(pod("u1", "old", &["10.0.0.1"]));
        ix.remove("u1");
        assert_eq!(owner(&ix, "10.0.0.1"), None);
        ix.apply(pod("u2", "new", &["10.0.0.1"]));
        assert_eq!(owner(&ix, "10.0.0.1").as_deref(), Some("new"));
        assert_eq!(ix.pods(), 1);
    }

    #[test]
    fn an_address_two_live_pods_claim_is_nobodys_until_one_lets_go() {
        let mut ix = PodIndex::default();
        ix.apply(pod("u1", "old", &["10.0.0.1"]));
        // The new pod's ADDED arrives before the old one's DELETED.
        ix.apply(pod("u2", "new", &["10.0.0.1"]));
        assert_eq!(owner(&ix, "10.0.0.1"), None);
        assert_eq!(ix.ambiguous(), 1);
        ix.remove("u1");
        assert_eq!(owner(&ix, "10.0.0.1").as_deref(), Some("new"));
        assert_eq!(ix.ambiguous(), 0);
        // Three claimants: still ambiguous after one leaves.
        ix.apply(pod("u3", "x", &["10.0.0.1"]));
        ix.apply(pod("u4", "y", &["10.0.0.1"]));
        ix.remove("u3");
        assert_eq!(owner(&ix, "10.0.0.1"), None);
        ix.remove("u2");
        assert_eq!(owner(&ix, "10.0.0.1").as_deref(), Some("y"));
    }

    #[test]
    fn an_update_moves_a_pod_and_an_update_without_addresses_removes_it() {
        let mut ix = PodIndex::default();
        ix.apply(pod("u1", "a", &["10.0.0.1"]));
        ix.apply(pod("u1", "a", &["10.0.0.9"]));
        assert_eq!(owner(&ix, "10.0.0.1"), None);
        assert_eq!(owner(&ix, "10.0.0.9").as_deref(), Some("a"));
        // The same pod twice (a repeated event) is not a conflict with itself.
        ix.apply(pod("u1", "a", &["10.0.0.9"]));
        assert_eq!(ix.ambiguous(), 0);
        ix.apply(pod("u1", "a", &[]));
        assert_eq!(owner(&ix, "10.0.0.9"), None);
        assert_eq!(ix.pods(), 0);
    }

    #[test]
    fn a_relist_drops_pods_deleted_while_nobody_watched() {
        let mut ix = PodIndex::default();
        ix.apply(pod("u1", "gone", &["10.0.0.1"]));
        ix.apply(pod("u2", "stays", &["10.0.0.2"]));
        ix.replace([pod("u2", "stays", &["10.0.0.2"])]);
        assert_eq!(owner(&ix, "10.0.0.1"), None);
        assert_eq!(owner(&ix, "10.0.0.2").as_deref(), Some("stays"));
    }

    #[test]
    fn shared_strings_are_kept_once_and_churn_does_not_grow_them() {
        let mut ix = PodIndex::default();
        for i in 0..10_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            ix.apply(pod(&format!("u{i}"), &format!("p{i}"), &[&ip]));
            if i >= 10 {
                ix.remove(&format!("u{}", i - 10));
            }
        }
        assert_eq!(ix.pods(), 10);
        // ns, sa, "app" and the values of the pods alive, plus what churned since the last sweep.
        assert!(ix.strings.len() <= SWEEP_MIN + 1, "{}", ix.strings.len());
        assert!(ix.strings.len() < 5_000);
    }
}
