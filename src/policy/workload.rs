//! Workload identity as the policy sees it: the pod a client address belongs to (namespace, service account,
//! labels), and the selectors client groups define with `namespaces`, `service_accounts` and `pod_labels`.
//! Pure: which pod an address belongs to is a fact the proxy looks up (see `crate::workloads`).

use std::sync::Arc;

/// The identity of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub namespace: Arc<str>,
    pub service_account: Arc<str>,
    /// The pod's name (logged as `pod`; empty for `egressd check --client NAMESPACE/SERVICEACCOUNT`).
    pub pod: Arc<str>,
    /// The pod's labels, sorted by key.
    pub labels: Vec<(Arc<str>, Arc<str>)>,
}

impl Workload {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.labels[i].1)
    }
}

/// What is known of the workload behind a client address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WorkloadFact {
    /// No client group uses workload identity: nothing was looked up.
    #[default]
    Unused,
    /// The address is a pod's.
    Pod(Arc<Workload>),
    /// The address is no live pod's (a node, something outside the cluster), or two live pods claim it.
    NotAPod,
    /// Workload identity is not available (the first pod list has not completed, or the API server has been
    /// unreachable for longer than `kubernetes.stale_after`): workload-scoped groups do not match.
    Unavailable(Arc<String>),
}

impl WorkloadFact {
    pub fn pod(&self) -> Option<&Workload> {
        match self {
            WorkloadFact::Pod(w) => Some(w),
            _ => None,
        }
    }
}

/// A client group's workload selector: a pod matches when it is in one of `namespaces`, runs as one of
/// `service_accounts` and carries every label in `pod_labels`; a field left empty does not restrict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadSelector {
    pub namespaces: Vec<String>,
    /// `(namespace, name)`.
    pub service_accounts: Vec<(String, String)>,
    pub pod_labels: Vec<(String, String)>,
}

impl WorkloadSelector {
    /// Does the selector select anything (is any field given)?
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.service_accounts.is_empty() && self.pod_labels.is_empty()
    }

    pub fn matches(&self, w: &Workload) -> bool {
        !self.is_empty()
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| **n == *w.namespace))
            && (self.service_accounts.is_empty()
                || (self.service_accounts.iter())
                    .any(|(n, s)| **n == *w.namespace && **s == *w.service_account))
            && (self.pod_labels.iter()).all(|(k, v)| w.label(k) == Some(v.as_str()))
    }
}

/// `NAMESPACE/NAME`, as `service_accounts` entries and `egressd check --client` write a service account.
pub fn parse_service_account(text: &str) -> Option<(String, String)> {
    let (ns, name) = text.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    (ok(ns) && ok(name)).then(|| (ns.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, sa: &str, labels: &[(&str, &str)]) -> Workload {
        let mut labels: Vec<(Arc<str>, Arc<str>)> = labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        labels.sort();
        Workload {
            namespace: ns.into(),
            service_account: sa.into(),
            pod: "p".into(),
            labels,
        }
    }

    #[test]
    fn fields_combine_and_values_within_a_field_are_alternatives() {
        let s = WorkloadSelector {
            namespaces: vec!["castai-agent".into(), "kvisor".into()],
            service_accounts: vec![],
            pod_labels: vec![("app".into(), "castai-agent".into())],
        };
        assert!(s.matches(&pod("castai-agent", "default", &[("app", "castai-agent")])));
        assert!(s.matches(&pod("kvisor", "x", &[("app", "castai-agent"), ("z", "1")])));
        // Right namespace, label missing or different; right label, other namespace.
        assert!(!s.matches(&pod("castai-agent", "default", &[])));
        assert!(!s.matches(&pod("castai-agent", "default", &[("app", "other")])));
        assert!(!s.matches(&pod("default", "default", &[("app", "castai-agent")])));
    }

    #[test]
    fn a_service_account_is_named_with_its_namespace() {
        let s = WorkloadSelector {
            service_accounts: vec![parse_service_account("castai-agent/castai-agent").unwrap()],
            ..Default::default()
        };
        assert!(s.matches(&pod("castai-agent", "castai-agent", &[])));
        // The same account name in another namespace is another account.
        assert!(!s.matches(&pod("default", "castai-agent", &[])));
        assert!(!WorkloadSelector::default().matches(&pod("a", "b", &[])));
    }

    #[test]
    fn service_account_syntax() {
        assert_eq!(
            parse_service_account("ns/sa"),
            Some(("ns".into(), "sa".into()))
        );
        for bad in ["ns", "/sa", "ns/", "ns/sa/x", "NS/sa", "ns/s a"] {
            assert_eq!(parse_service_account(bad), None, "{bad}");
        }
    }
}
