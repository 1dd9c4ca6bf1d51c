//! A Pod object from the API server → what the index keeps of it.

use super::index::PodEntry;
use crate::policy::workload::Workload;
use k8s_openapi::api::core::v1::Pod;
use std::net::IpAddr;
use std::sync::Arc;

/// The index entry of a pod, or `None` for an object without a uid. The entry has no addresses when the pod
/// does not own one: `hostNetwork` pods (their address is the node's, shared by every such pod on it),
/// finished pods (`Succeeded`, `Failed`: the node may already have given their address to a new pod) and pods
/// not yet given an address.
pub fn entry(pod: &Pod) -> Option<PodEntry> {
    let meta = &pod.metadata;
    let uid: Arc<str> = meta.uid.as_deref()?.into();
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let finished = matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    let ips = if host_network || finished {
        Vec::new()
    } else {
        let listed = status.and_then(|s| s.pod_ips.as_ref());
        let mut ips: Vec<IpAddr> = match listed {
            Some(all) if !all.is_empty() => all.iter().filter_map(|p| p.ip.parse().ok()).collect(),
            _ => (status.and_then(|s| s.pod_ip.as_deref()))
                .and_then(|ip| ip.parse().ok())
                .into_iter()
                .collect(),
        };
        ips.iter_mut().for_each(|ip| *ip = ip.to_canonical());
        ips.sort();
        ips.dedup();
        ips
    };
    let mut labels: Vec<(Arc<str>, Arc<str>)> = (meta.labels.iter().flatten())
        .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
        .collect();
    labels.sort();
    let workload = Workload {
        namespace: meta.namespace.as_deref().unwrap_or("default").into(),
        // The API server sets it on every pod it admits; "default" is what it would set.
        service_account: (spec.and_then(|s| s.service_account_name.as_deref()))
            .unwrap_or("default")
            .into(),
        pod: meta.name.as_deref().unwrap_or("").into(),
        labels,
    };
    Some(PodEntry { uid, ips, workload })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_running_pod_owns_its_addresses() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "castai-agent-7d9", "namespace": "castai-agent", "uid": "u1",
                         "labels": {"app.kubernetes.io/name": "castai-agent", "a": "b"}},
            "spec": {"serviceAccountName": "castai-agent", "containers": []},
            "status": {"phase": "Running", "podIP": "10.4.0.7",
                       "podIPs": [{"ip": "10.4.0.7"}, {"ip": "fd00::7"}]}
        }));
        let e = entry(&p).unwrap();
        assert_eq!(e.ips.len(), 2);
        assert_eq!(&*e.workload.namespace, "castai-agent");
        assert_eq!(&*e.workload.service_account, "castai-agent");
        assert_eq!(&*e.workload.pod, "castai-agent-7d9");
        assert_eq!(
            e.workload.label("app.kubernetes.io/name"),
            Some("castai-agent")
        );
    }

    #[test]
    fn host_network_and_finished_pods_own_no_address() {
        for (spec, phase) in [
            (
                serde_json::json!({"hostNetwork": true, "containers": []}),
                "Running",
            ),
            (serde_json::json!({"containers": []}), "Succeeded"),
            (serde_json::json!({"containers": []}), "Failed"),
        ] {
            let p = pod(serde_json::json!({
                "metadata": {"name": "x", "namespace": "kube-system", "uid": "u"},
                "spec": spec,
                "status": {"phase": phase, "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}]}
            }));
            assert!(entry(&p).unwrap().ips.is_empty(), "{phase}");
        }
        // Pending, no address yet; podIP only (older API servers).
        let p = pod(serde_json::json!({"metadata": {"uid": "u"}, "status": {"phase": "Pending"}}));
        assert!(entry(&p).unwrap().ips.is_empty());
        let p = pod(serde_json::json!({"metadata": {"uid": "u"}, "status": {"podIP": "10.0.0.6"}}));
        assert_eq!(
            entry(&p).unwrap().ips,
            ["10.0.0.6".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(&*entry(&p).unwrap().workload.service_account, "default");
        assert!(entry(&pod(serde_json::json!({"metadata": {}}))).is_none());
    }
}
