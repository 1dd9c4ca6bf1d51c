#!/usr/bin/env python3
"""Write a kustomize overlay's agent files from one set of values: agent-network.yaml (Helm chart values:
agents, agentNetwork, apiServer, networkPolicy.dns) is rendered with the chart (deploy/render_chart.py's engine)
into agent-proxy.env (the agents' HTTP(S)_PROXY and NO_PROXY) and agent-networkpolicy.yaml (their egress
NetworkPolicy), so the two agree as they do in the chart.

usage: agent_network.py OVERLAY_DIR            (rewrites the two files, and cluster-policy/agent-adminnetworkpolicy.yaml
                                               when the overlay has a cluster-policy/ directory)
       agent_network.py --check OVERLAY_DIR...  (fails if a file differs from what its values give)
"""
import copy
import os
import subprocess
import tempfile
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(REPO, "deploy/helm/egressd")
ENV_KEYS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


class Indented(yaml.SafeDumper):
    """Lists indented under their key, as the other manifests write them."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def render(overlay):
    values = os.path.join(overlay, "agent-network.yaml")
    spec = yaml.safe_load(open(values))
    cluster_policy = os.path.isdir(os.path.join(overlay, "cluster-policy"))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as tmp:
        # The cluster-scoped variant too, when the overlay has a cluster-policy/ kustomization for it.
        with_cluster = copy.deepcopy(spec)
        with_cluster["agents"][0]["clusterPolicy"] = cluster_policy
        yaml.safe_dump(with_cluster, tmp)
        tmp.flush()
        out = subprocess.run([sys.executable, os.path.join(REPO, "deploy/render_chart.py"), CHART, tmp.name],
                             check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    agent = spec["agents"][0]
    ns = agent["namespace"]
    env = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "egressd-proxy-env")
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "egress-through-egressd")
    rel = os.path.relpath(values, REPO)
    # The chart selects its pods by name and instance; the kustomize base labels them by name only.
    base = yaml.safe_load(open(os.path.join(REPO, "deploy/kubernetes/base/deployment.yaml")))
    pod_labels = base["spec"]["template"]["metadata"]["labels"]
    for rule in policy["spec"]["egress"]:
        for peer in rule.get("to") or []:
            if "app.kubernetes.io/name" in ((peer.get("podSelector") or {}).get("matchLabels") or {}):
                peer["podSelector"]["matchLabels"] = dict(pod_labels)
    env_text = (
        f"# Proxy environment for the agents in {ns}, generated from agent-network.yaml by\n"
        f"#   python deploy/agent_network.py {os.path.relpath(overlay, REPO)}\n"
        "# (the same NO_PROXY as `egressd agent-env --pod-cidr POD --service-cidr SERVICE` with the preset's ranges).\n"
        "# Edit agent-network.yaml, not this file: the agents' NetworkPolicy is generated from the same values.\n"
        + "".join(f"{k}={env['data'][k]}\n" for k in ENV_KEYS))
    labels = {"app.kubernetes.io/part-of": "egressd",
              "app.kubernetes.io/component": policy["metadata"]["labels"]["app.kubernetes.io/component"]}
    obj = {"apiVersion": policy["apiVersion"], "kind": policy["kind"],
           "metadata": {"name": policy["metadata"]["name"], "namespace": ns, "labels": labels,
                        "annotations": policy["metadata"]["annotations"]},
           "spec": policy["spec"]}
    policy_text = (
        f"# The agents' egress NetworkPolicy (every pod in {ns}), generated from {os.path.basename(rel)} by\n"
        f"#   python deploy/agent_network.py {os.path.relpath(overlay, REPO)}\n"
        "# Agents may reach egressd, the cluster DNS, the API server and what their NO_PROXY (agent-proxy.env) sends\n"
        "# direct, nothing else. Pods on the host network are not covered by NetworkPolicy. Apply it last, once the\n"
        "# agents use egressd (README \"Rollout order\"); until then `kubectl apply -k` leaves it out with\n"
        "#   -l app.kubernetes.io/component!=agent-egress-policy\n"
        + yaml.dump(obj, Dumper=Indented, sort_keys=False, default_flow_style=False))
    files = {"agent-proxy.env": env_text, "agent-networkpolicy.yaml": policy_text}
    if cluster_policy:
        anp = next(d for d in docs if d["kind"] == "AdminNetworkPolicy")
        for rule in anp["spec"]["egress"]:
            for peer in rule.get("to") or []:
                if "app.kubernetes.io/name" in (((peer.get("pods") or {}).get("podSelector") or {}).get("matchLabels") or {}):
                    peer["pods"]["podSelector"]["matchLabels"] = dict(pod_labels)
        anp["metadata"]["labels"] = labels
        files["cluster-policy/agent-adminnetworkpolicy.yaml"] = (
            f"# The agents' egress rules for {ns} as a cluster-scoped AdminNetworkPolicy (policy.networking.k8s.io; a CNI\n"
            "# that implements it), generated from ../agent-network.yaml by\n"
            f"#   python deploy/agent_network.py {os.path.relpath(overlay, REPO)}\n"
            "# It selects the namespace by name, so it outlives the namespace's deletion (the vendor's documented\n"
            "# upgrade) and holds again when it is recreated; the namespace's NetworkPolicies cannot widen it. Apply\n"
            "# it last, as the NetworkPolicy (README \"Rollout order\"): kubectl apply -k cluster-policy\n"
            + yaml.dump(anp, Dumper=Indented, sort_keys=False, default_flow_style=False))
    return files


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    check = args[0] == "--check"
    failures = 0
    for overlay in args[1:] if check else args:
        for name, text in render(overlay).items():
            path = os.path.join(overlay, name)
            if check:
                if open(path).read() != text:
                    print(f"{path} differs from what agent-network.yaml gives: run python deploy/agent_network.py "
                          f"{os.path.relpath(overlay, REPO)}", file=sys.stderr)
                    failures += 1
            else:
                open(path, "w").write(text)
    if check and not failures:
        print(f"agent files match their agent-network.yaml: {', '.join(args[1:])}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
