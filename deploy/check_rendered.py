#!/usr/bin/env python3
"""Cross-checks one rendered set of egressd objects (a kustomize build or a Helm render), the way
tests/deploy_manifests.rs checks the kustomize sources:

- the config's listen port is the container's "proxy" port and the Service's proxy target; the admin port is
  the one the probes use, on /healthz and /readyz; every listener binds [::] (IPv4 and IPv6) and every Service
  prefers dual-stack;
- args name the config file the ConfigMap volume mounts (a directory mount, never subPath);
- every Deployment sets enableServiceLinks: false (Service variables such as EGRESSD_SERVICE_HOST would be read
  by egressd as config overrides);
- terminationGracePeriodSeconds covers the preStop sleep plus shutdown.grace;
- egressd's egress NetworkPolicies open, to public IPv4 and IPv6 addresses, every port an allow rule or a vendor
  profile of the config uses, and reach every destinations.allow_cidrs CIDR on those ports, and every private_cidrs
  CIDR of a rule or vendor item (which the agents' NO_PROXY must not send direct); egressd's and the
  agents' policies allow DNS (UDP and TCP 53) to the same peers;
- egressd's ingress NetworkPolicy admits each agent namespace on the proxy ports (not every source), and the
  admin port to Prometheus when a ServiceMonitor scrapes it;
- an agent NetworkPolicy lets agents reach the proxy port; an agent ConfigMap points at the Service;
- an agents' AdminNetworkPolicy (the cluster-scoped variant) is checked as the NetworkPolicy it stands for, and
  must end with a Deny of every other address;
- each destination the agents' NO_PROXY sends direct is allowed by their NetworkPolicy (every port; port 80 for
  metadata addresses), and the policy opens nothing NO_PROXY does not send direct besides egressd, DNS and the
  API server (the rule whose CIDRs the egressd.io/api-server annotation names);
- each parent proxy's credentials_file is a key of a Secret (its ca: of a Secret or ConfigMap) that the container
  mounts read-only as a directory, a credentials_env comes from a Secret, and egressd's egress NetworkPolicies
  reach every parent on its url's port: at its IP address, or at the CIDRs their egressd.io/parent-cidrs
  annotation names for it (a NetworkPolicy cannot follow a name);
- workload identity: a config with client groups by namespaces, service_accounts or pod_labels comes with the
  service account token mounted, a ClusterRole bound to the pod's ServiceAccount granting list and watch on pods,
  and egressd's egress NetworkPolicies open to the API server's CIDRs (their egressd.io/api-server annotation,
  the same as the agents' policy names) on apiServer.ports (443 and 6443 for kustomize); a config without such
  groups mounts no token and binds no role; whatever is bound grants nothing but get, list and watch on pods;
- every object but the cluster-scoped ones (Namespace, AdminNetworkPolicy, ClusterRole, ClusterRoleBinding) has
  a namespace;
- a ServiceMonitor selects the Service and scrapes a port it has, on /metrics; with the chart, the ServiceMonitor
  and PrometheusRule carry the labels of metrics.serviceMonitor.labels and alerts.prometheusRule.labels (the
  values files are named by render_chart.py's "# egressd-values:" header lines).

usage: check_rendered.py RENDERED.yaml CONFIG_OUT_DIR   (writes the egressd config for `egressd validate`, with
                                                      the parents' files from the render or, for Secrets the
                                                      user creates at install, deploy/install-secrets.yaml;
                                                      CONFIG_OUT_DIR "-": check only)
       check_rendered.py --self-test RENDERED.yaml...  (each check must fail on a broken copy of a good set)
"""
import base64
import copy
import ipaddress
import json
import os
import re
import sys

import yaml

CONFIG_PATH = "/etc/egressd/egressd.yaml"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART_VALUES = os.path.join(REPO, "deploy/helm/egressd/values.yaml")
INSTALL_SECRETS = os.path.join(REPO, "deploy/install-secrets.yaml")
PARENT_CIDRS = "egressd.io/parent-cidrs"
API_SERVER = "egressd.io/api-server"
CLUSTER_SCOPED = ("Namespace", "AdminNetworkPolicy", "ClusterRole", "ClusterRoleBinding")
# Workload identity: the client group fields that need egressd to list and watch pods, and the one grant it needs.
WORKLOAD_FIELDS = ("namespaces", "service_accounts", "pod_labels")
POD_VERBS = {"get", "list", "watch"}
# The API server's ports an egress rule must open when the chart's values do not say (the component's).
API_SERVER_PORTS = [443, 6443]
VENDORS_DIR = os.path.join(REPO, "config/vendors")
# Stand-ins for "any public address" of each family.
PUBLIC = [ipaddress.ip_network("8.8.8.8/32"), ipaddress.ip_network("2001:4860:4860::8888/128")]
DUAL_STACK = ("PreferDualStack", "RequireDualStack")


def duration_seconds(text):
    m = re.fullmatch(r"(\d+)s", str(text))
    if not m:
        raise SystemExit(f"shutdown.grace {text!r}: expected seconds such as 30s")
    return int(m.group(1))


def port_of(listen):
    return int(str(listen).rsplit(":", 1)[1])


def named(items, name):
    for item in items or []:
        if item.get("name") == name:
            return item
    return None


def merge(base, override):
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load(rendered):
    """The documents of a rendered set and, for a chart render, its merged values (else None)."""
    text = open(rendered).read()
    docs = [d for d in yaml.safe_load_all(text) if d]
    files = re.findall(r"^# egressd-values: (.+)$", text, re.M)
    values = None
    if files or "# Source: " in text:
        values = yaml.safe_load(open(CHART_VALUES))
        for f in files:
            values = merge(values, yaml.safe_load(open(os.path.join(REPO, f))) or {})
    return docs, values


# --- NetworkPolicy helpers ---


def port_open(rule, port, proto="TCP"):
    """Whether a NetworkPolicy rule's ports admit proto/port (no ports: every port)."""
    ports = rule.get("ports")
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != proto:
            continue
        first = p.get("port")
        if first is None:
            return True
        if isinstance(first, int) and first <= port <= p.get("endPort", first):
            return True
    return False


def peer_covers(peer, net):
    block = peer.get("ipBlock")
    if not block:
        return False
    cidr = ipaddress.ip_network(block["cidr"], strict=False)
    if cidr.version != net.version or not net.subnet_of(cidr):
        return False
    return not any(net.overlaps(ipaddress.ip_network(e, strict=False)) for e in block.get("except") or [])


def egress_reaches(policies, net, port, proto="TCP"):
    """Policies selecting the same pods add up: any rule of any of them may let the traffic out."""
    for p in policies:
        for rule in p["spec"].get("egress") or []:
            to = rule.get("to")
            if (not to or any(peer_covers(peer, net) for peer in to)) and port_open(rule, port, proto):
                return True
    return False


def dns_peers(policy):
    """The peers of the rules that name UDP and TCP 53, as canonical JSON strings (a rule without ports, such as
    the agents' in-cluster rule, is not a DNS rule)."""
    peers = set()
    for rule in policy["spec"].get("egress") or []:
        if rule.get("ports") and port_open(rule, 53, "UDP") and port_open(rule, 53, "TCP") and rule.get("to"):
            peers.update(json.dumps(peer, sort_keys=True) for peer in rule["to"])
    return peers


LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}
METADATA_NAMES = {"metadata.google.internal": "169.254.169.254"}
METADATA_NETS = [ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fd00:ec2::/32")]


def as_net(entry):
    try:
        return ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return None


def agent_network_errors(policy, no_proxy, selector, domain_hint=None):
    """What the agents' NO_PROXY sends direct and what their NetworkPolicy lets out must agree: each direct
    destination is allowed (on every port, HTTP for metadata), and the policy opens nothing else besides egressd,
    DNS and the API server (the rule with the egressd.io/api-server annotation's CIDRs)."""
    ns = policy["metadata"]["namespace"]
    errors = []
    api = {c for c in ((policy["metadata"].get("annotations") or {}).get("egressd.io/api-server") or "").split(",") if c}
    if not api:
        errors.append(f"agent NetworkPolicy in {ns} has no egressd.io/api-server annotation naming its API server rule")
    rules = []  # the rules that must answer for NO_PROXY entries
    api_rule = False
    for rule in policy["spec"].get("egress") or []:
        to = rule.get("to") or []
        if any((t.get("podSelector") or {}).get("matchLabels") == selector for t in to):
            continue
        if rule.get("ports") and all(x.get("port") == 53 for x in rule["ports"]):
            continue
        if to and all("ipBlock" in t for t in to) and {t["ipBlock"]["cidr"] for t in to} == api:
            api_rule = True
            continue
        rules.append(rule)
    entries = [e.strip() for e in no_proxy.split(",") if e.strip()]
    in_cluster = [e for e in entries if e.startswith(".")]

    def allows(net, port):
        return any(port_open(r, port) and any(peer_covers(p, net) for p in r.get("to") or []) for r in rules)

    all_pods = any(port_open(r, 1) and any(t == {"namespaceSelector": {}} for t in r.get("to") or []) for r in rules)
    for e in entries:
        net = as_net(METADATA_NAMES.get(e, e))
        if e in LOOPBACK:
            continue
        if e in ("kubernetes", "kubernetes.default"):
            if not api_rule:
                errors.append(f"NO_PROXY in {ns} sends {e} direct but the agent NetworkPolicy has no API server rule")
        elif e.startswith("."):
            if not all_pods:
                errors.append(f"NO_PROXY in {ns} sends {e} names direct but the agent NetworkPolicy does not let the "
                              "agents reach the cluster's pods (namespaceSelector: {})")
        elif net is None:
            errors.append(f"NO_PROXY in {ns} sends {e} direct, where the agent NetworkPolicy cannot follow a name")
        elif any(net.subnet_of(m) for m in METADATA_NETS if m.version == net.version):
            if not allows(net, 80):
                errors.append(f"NO_PROXY in {ns} sends {e} direct but the agent NetworkPolicy drops it (port 80): "
                              "a timeout instead of an answer (agentNetwork.metadata blocked leaves it out of both)")
        elif not all(allows(net, port) for port in (80, 443, 8080, 65535)):
            errors.append(f"NO_PROXY in {ns} sends {e} direct but the agent NetworkPolicy does not let it out on "
                          "every port")
    direct = {as_net(METADATA_NAMES.get(e, e)) for e in entries} - {None}
    for r in rules:
        for peer in r.get("to") or [{}]:
            if peer == {"namespaceSelector": {}}:
                if not in_cluster:
                    errors.append(f"the agent NetworkPolicy in {ns} opens every pod but NO_PROXY sends no .svc "
                                  "names direct")
            elif "ipBlock" in peer:
                cidr = ipaddress.ip_network(peer["ipBlock"]["cidr"], strict=False)
                if cidr not in direct:
                    errors.append(f"the agent NetworkPolicy in {ns} opens {cidr}, which NO_PROXY does not send "
                                  "direct (agents never use it, or NO_PROXY lacks it)")
            else:
                errors.append(f"the agent NetworkPolicy in {ns} opens {json.dumps(peer, sort_keys=True)}, which "
                              "NO_PROXY does not send direct")
    return errors


def admin_policy_as_network_policy(anp, errors):
    """An agents' AdminNetworkPolicy (cluster-scoped) as the NetworkPolicy it stands for: its Allow rules as
    egress rules (pods, namespaces and networks peers as NetworkPolicy peers), for the same checks; its last rule
    must deny every other address."""
    name = anp["metadata"]["name"]
    ns = ((anp["spec"].get("subject") or {}).get("namespaces") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
    if not ns:
        errors.append(f"AdminNetworkPolicy/{name} does not select one namespace by kubernetes.io/metadata.name")
    rules = []
    egress = anp["spec"].get("egress") or []
    for r in egress:
        if r.get("action") != "Allow":
            continue
        to = []
        for peer in r.get("to") or []:
            if "pods" in peer:
                to.append({"namespaceSelector": peer["pods"]["namespaceSelector"], "podSelector": peer["pods"]["podSelector"]})
            if "namespaces" in peer:
                to.append({"namespaceSelector": peer["namespaces"]})
            to.extend({"ipBlock": {"cidr": c}} for c in peer.get("networks") or [])
        rule = {"to": to}
        if r.get("ports"):
            rule["ports"] = [{"protocol": p["portNumber"]["protocol"], "port": p["portNumber"]["port"]} for p in r["ports"]]
        rules.append(rule)
    last = egress[-1] if egress else {}
    nets = {c for peer in last.get("to") or [] for c in peer.get("networks") or []}
    if last.get("action") != "Deny" or not {"0.0.0.0/0", "::/0"} <= nets:
        errors.append(f"AdminNetworkPolicy/{name} does not end with a Deny of 0.0.0.0/0 and ::/0: the agents could "
                      "go around egressd")
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns or "?", "labels": anp["metadata"].get("labels"),
                                                  "annotations": anp["metadata"].get("annotations")},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": rules}}


def ports_of(spec):
    """Ports of an allow rule or profile entry: numbers or "first-last" ranges (default 443)."""
    out = []
    for p in spec if spec else [443]:
        if isinstance(p, int):
            out.append((p, p))
        else:
            first, _, last = str(p).partition("-")
            out.append((int(first), int(last or first)))
    return out


def config_ports(config, errors):
    """(first, last, what) for every port range an allow rule or a vendor profile entry of the config uses."""
    wanted = []
    for rule in config.get("allow") or []:
        for first, last in ports_of(rule.get("ports")):
            wanted.append((first, last, f"allow rule {rule.get('name')}"))
    disabled = set(config.get("vendors_disable") or [])
    for item in config.get("vendors") or []:
        name = item if isinstance(item, str) else item["name"]
        path = os.path.join(VENDORS_DIR, f"{name}.yaml")
        if not os.path.exists(path):
            errors.append(f"vendor profile {name}: no {os.path.relpath(path, REPO)}")
            continue
        for entry in yaml.safe_load(open(path)).get("entries") or []:
            rule = f"{name}/{entry['name']}"
            if rule not in disabled:
                for first, last in ports_of(entry.get("ports")):
                    wanted.append((first, last, f"vendor profile rule {rule}"))
    return wanted


# --- parent proxies: mounted files and addresses ---


def mounted_source(pod, container, path):
    """Which ConfigMap or Secret key the container sees at `path`: {kind, name, key, mount, volume}, or None.
    The deepest volumeMount holding `path` decides; items map keys to paths; a projected volume has sources."""
    best = None
    for m in container.get("volumeMounts") or []:
        root = m["mountPath"].rstrip("/")
        if path == root and m.get("subPath"):
            rel = m["subPath"]
        elif path.startswith(root + "/"):
            rel = path[len(root) + 1:]
        else:
            continue
        if best is None or len(root) > len(best[0]["mountPath"].rstrip("/")):
            best = (m, rel)
    if best is None:
        return None
    m, rel = best
    volume = named(pod.get("volumes"), m["name"]) or {}
    sources = []
    if "secret" in volume:
        sources.append(("Secret", volume["secret"].get("secretName"), volume["secret"].get("items")))
    if "configMap" in volume:
        sources.append(("ConfigMap", volume["configMap"].get("name"), volume["configMap"].get("items")))
    for s in (volume.get("projected") or {}).get("sources") or []:
        if "secret" in s:
            sources.append(("Secret", s["secret"].get("name"), s["secret"].get("items")))
        if "configMap" in s:
            sources.append(("ConfigMap", s["configMap"].get("name"), s["configMap"].get("items")))
    for kind, name, items in sources:
        if items:
            item = next((i for i in items if i["path"] == rel), None)
            if item:
                return {"kind": kind, "name": name, "key": item["key"], "mount": m, "volume": volume}
        elif "/" not in rel:
            return {"kind": kind, "name": name, "key": rel, "mount": m, "volume": volume}
    return None


def parent_address(url):
    """(host, port) of a parent's url: http://host:port, https://[v6]:port."""
    m = re.fullmatch(r"(?i)https?://(\[[^\]]+\]|[^:/@]+):(\d+)/?", str(url))
    if not m:
        return None, None
    return m.group(1).strip("[]"), int(m.group(2))


def parent_errors(config, pod, container, own, names):
    """The parents' credentials files are Secret keys (their CA bundles: Secret or ConfigMap keys) mounted read-only as
    directories, and egressd's egress policies reach each parent's addresses on its port."""
    errors = []
    parents = config.get("parents") or []
    env = {e["name"]: e for e in container.get("env") or []}
    for i, p in enumerate(parents):
        where = f"parents[{i}] ({p.get('name')})"
        var = p.get("credentials_env")
        if var is not None and "secretKeyRef" not in ((env.get(var) or {}).get("valueFrom") or {}):
            errors.append(f"{where}.credentials_env {var}: the container must take it from a Secret "
                          "(valueFrom.secretKeyRef), never a literal value or a ConfigMap")
        for key, kinds in (("credentials_file", ("Secret",)), ("ca", ("Secret", "ConfigMap"))):
            path = p.get(key)
            if path is None:
                continue
            src = mounted_source(pod, container, path)
            if src is None:
                errors.append(f"{where}.{key} {path}: no ConfigMap or Secret volume of the egressd container mounts "
                              "that file (egressd would refuse the config: cannot read it)")
                continue
            if src["kind"] not in kinds:
                errors.append(f"{where}.{key} {path} is key {src['key']} of {src['kind']} {src['name']}: credentials "
                              "belong in a Secret")
            if not src["mount"].get("readOnly"):
                errors.append(f"{where}.{key} {path}: the volume {src['mount']['name']} is not mounted read-only")
            if src["mount"].get("subPath"):
                errors.append(f"{where}.{key} {path}: a subPath mount never sees the Secret's updates (mount the "
                              "directory)")
    if not own:
        return errors
    declared = {}
    for policy in own:
        text = (policy["metadata"].get("annotations") or {}).get(PARENT_CIDRS)
        if text:
            for name, cidrs in json.loads(text).items():
                declared.setdefault(name, []).extend(cidrs)
    known = {p.get("name") for p in parents}
    for name in declared:
        if name not in known:
            errors.append(f"the {PARENT_CIDRS} annotation of egressd's egress NetworkPolicy ({names}) names parent "
                          f"{name}, which the config does not have (a placeholder left, or a renamed parent)")
    for i, p in enumerate(parents):
        host, port = parent_address(p.get("url"))
        if port is None:
            errors.append(f"parents[{i}].url {p.get('url')!r}: expected http(s)://host:port")
            continue
        nets = [ipaddress.ip_network(c, strict=False) for c in declared.get(p.get("name"), [])]
        literal = as_net(host)
        if literal is not None:
            nets.append(literal)
        if not nets:
            errors.append(f"parent {p.get('name')} ({host}): egressd's egress NetworkPolicy ({names}) names no "
                          f"address for it; give the CIDRs {host} resolves to in its {PARENT_CIDRS} annotation "
                          "and an ipBlock rule for them (a NetworkPolicy cannot follow a name)")
        for net in nets:
            if not egress_reaches(own, net, port):
                errors.append(f"parent {p.get('name')} at {net} is not reachable on port {port} through egressd's "
                              f"egress NetworkPolicy ({names})")
    return errors


def workload_groups(config):
    """The client groups that name namespaces, service accounts or pod labels (workload identity)."""
    return [g.get("name") for g in config.get("clients") or [] if any(g.get(f) for f in WORKLOAD_FIELDS)]


def token_mounted(pod, service_account):
    """Whether the kubelet mounts the service account token: the pod's automountServiceAccountToken, else the
    ServiceAccount's, else true."""
    if pod.get("automountServiceAccountToken") is not None:
        return bool(pod["automountServiceAccountToken"])
    if service_account is not None and service_account.get("automountServiceAccountToken") is not None:
        return bool(service_account["automountServiceAccountToken"])
    return True


def bound_rules(docs, namespace, account):
    """[(role kind/name, rule, cluster-wide)] of every Role and ClusterRole the render binds to ServiceAccount
    namespace/account."""
    out = []
    for b in docs:
        if b["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        bns = b["metadata"].get("namespace")
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == account
                   and s.get("namespace", bns) == namespace for s in b.get("subjects") or []):
            continue
        ref = b["roleRef"]
        role = next((d for d in docs if d["kind"] == ref["kind"] and d["metadata"]["name"] == ref["name"]
                     and (ref["kind"] == "ClusterRole" or d["metadata"].get("namespace") == bns)), None)
        if role is None:
            out.append((f"{ref['kind']}/{ref['name']} (not in the render)", None, b["kind"] == "ClusterRoleBinding"))
            continue
        for rule in role.get("rules") or []:
            out.append((f"{ref['kind']}/{ref['name']}", rule, b["kind"] == "ClusterRoleBinding"))
    return out


def workload_errors(docs, config, deployment, own, agent_policies, values):
    """Workload identity: a client group by namespace, service account or pod labels needs the pod's token
    mounted, a ClusterRole bound to its ServiceAccount granting list and watch on pods, and egressd's egress
    policies open to the API server; without such a group egressd needs none of it. Whatever is bound grants
    nothing but get, list and watch on pods."""
    errors = []
    groups = workload_groups(config)
    ns = deployment["metadata"].get("namespace", "default")
    pod = deployment["spec"]["template"]["spec"]
    account = pod.get("serviceAccountName") or "default"
    sa = next((d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account
               and d["metadata"].get("namespace", ns) == ns), None)
    token = token_mounted(pod, sa)
    rules = bound_rules(docs, ns, account)
    for role, rule, _ in rules:
        if rule is None:
            errors.append(f"{role} is bound to ServiceAccount {ns}/{account}")
            continue
        extra = (set(rule.get("verbs") or []) - POD_VERBS, set(rule.get("resources") or []) - {"pods"},
                 set(rule.get("apiGroups") or []) - {""})
        if any(extra) or rule.get("nonResourceURLs") or rule.get("resourceNames"):
            errors.append(f"{role} grants {rule}: egressd needs only get, list and watch on pods")
    if not groups:
        if token:
            errors.append(f"Deployment/{deployment['metadata']['name']} mounts its service account token but no "
                          "client group uses namespaces, service_accounts or pod_labels: egressd does not need it "
                          "(automountServiceAccountToken: false)")
        for role, _, _ in rules:
            errors.append(f"{role} is bound to ServiceAccount {ns}/{account} but no client group uses workload "
                          "identity")
        return errors
    what = f"config.clients {', '.join(groups)} (namespaces, service_accounts, pod_labels)"
    if not token:
        errors.append(f"{what}: Deployment/{deployment['metadata']['name']} does not mount its service account "
                      "token (automountServiceAccountToken): egressd could not list pods")
    granted = set()
    for _, rule, cluster_wide in rules:
        if rule and cluster_wide and "" in (rule.get("apiGroups") or []) and "pods" in (rule.get("resources") or []):
            granted |= set(rule.get("verbs") or [])
    if not {"list", "watch"} <= granted:
        errors.append(f"{what}: no ClusterRole bound to ServiceAccount {ns}/{account} grants list and watch on pods "
                      f"(granted: {sorted(granted) or 'nothing'})")
    if own:
        names = ", ".join(p["metadata"]["name"] for p in own)
        cidrs = sorted({c for p in own for c in ((p["metadata"].get("annotations") or {}).get(API_SERVER) or "").split(",")
                        if c})
        if not cidrs:
            errors.append(f"{what}: egressd's egress NetworkPolicy ({names}) names no API server (its {API_SERVER} "
                          "annotation and an ipBlock rule for those addresses)")
        ports = (values or {}).get("apiServer", {}).get("ports") or API_SERVER_PORTS
        for c in cidrs:
            net = ipaddress.ip_network(c, strict=False)
            for port in ports:
                if not egress_reaches(own, net, port):
                    errors.append(f"the API server {net} is not reachable on port {port} through egressd's egress "
                                  f"NetworkPolicy ({names}): egressd could not list pods")
        for p in agent_policies:
            theirs = sorted(c for c in ((p["metadata"].get("annotations") or {}).get(API_SERVER) or "").split(",") if c)
            if cidrs and theirs and theirs != cidrs:
                errors.append(f"the API server of egressd's egress NetworkPolicy ({', '.join(cidrs)}) differs from the "
                              f"agent NetworkPolicy's in {p['metadata']['namespace']} ({', '.join(theirs)})")
    return errors


def install_secrets():
    """The Secrets of deploy/install-secrets.yaml: {(namespace, name): {key: bytes}}."""
    out = {}
    for d in yaml.safe_load_all(open(INSTALL_SECRETS)):
        if d and d.get("kind") == "Secret":
            data = {k: v.encode() for k, v in (d.get("stringData") or {}).items()}
            out[(d["metadata"].get("namespace", "default"), d["metadata"]["name"])] = data
    return out


def config_for_validate(docs, config, out_dir, stem):
    """The config for `egressd validate` on this host: each parent's credentials_file and ca pointed at a copy of
    the key it names, from the render or deploy/install-secrets.yaml. Returns (config text or None, notes)."""
    parents = [p for p in config.get("parents") or [] if p.get("credentials_file") or p.get("ca")]
    if not parents:
        return None, []
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("egressd"))
    ns = deployment["metadata"].get("namespace", "default")
    pod = deployment["spec"]["template"]["spec"]
    container = named(pod["containers"], "egressd")
    fixtures = install_secrets()
    notes = []
    for p in parents:
        for key in ("credentials_file", "ca"):
            path = p.get(key)
            src = mounted_source(pod, container, path) if path else None
            if src is None:
                continue
            obj = next((d for d in docs if d["kind"] == src["kind"] and d["metadata"]["name"] == src["name"]
                        and d["metadata"].get("namespace", "default") == ns), None)
            if obj is not None and src["kind"] == "ConfigMap":
                data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
                origin = "the render"
            elif obj is not None:
                data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
                data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
                origin = "the render"
            else:
                data = fixtures.get((ns, src["name"])) if src["kind"] == "Secret" else None
                origin = os.path.relpath(INSTALL_SECRETS, REPO)
            if not data or src["key"] not in data:
                continue  # egressd validate then names the file it cannot read
            local = os.path.join(out_dir, "files", stem, path.lstrip("/"))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            with open(local, "wb") as f:
                f.write(data[src["key"]])
            p[key] = local
            notes.append(f"{path} (key {src['key']} of {src['kind']} {src['name']}, from {origin})")
    return yaml.safe_dump(config, sort_keys=False), notes


# --- the checks ---


def check_set(docs, values):
    errors = []

    def check(cond, msg):
        if not cond:
            errors.append(msg)

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    # Every object but the Namespace names its namespace, so nothing lands in the kubectl context's default.
    for d in docs:
        if d["kind"] not in CLUSTER_SCOPED:
            check(d["metadata"].get("namespace"), f"{d['kind']}/{d['metadata']['name']} has no namespace")

    for d in by_kind.get("Deployment", []):
        check(d["spec"]["template"]["spec"].get("enableServiceLinks") is False,
              f"Deployment/{d['metadata']['name']}: enableServiceLinks must be false (Service variables such as "
              "EGRESSD_SERVICE_HOST would be read as egressd config overrides)")

    deployment = next(d for d in by_kind["Deployment"] if d["metadata"]["name"].endswith("egressd"))
    pod = deployment["spec"]["template"]["spec"]
    container = named(pod["containers"], "egressd")
    selector = deployment["spec"]["selector"]["matchLabels"]
    service = next(s for s in by_kind["Service"] if s["spec"]["selector"] == selector)
    volume = named(pod["volumes"], "config")
    configmap = next(c for c in by_kind["ConfigMap"] if c["metadata"]["name"] == volume["configMap"]["name"])
    config = yaml.safe_load(configmap["data"][os.path.basename(CONFIG_PATH)])

    # Ports and probes; every listener takes IPv4 and IPv6 ([::], IPV6_V6ONLY off), so that probes and Service
    # traffic reach the pod on IPv6-only and dual-stack clusters too.
    proxy = named(container["ports"], "proxy")
    admin = named(container["ports"], "admin")
    check(proxy and proxy["containerPort"] == port_of(config["listen"]), "listen port != containerPort proxy")
    check(admin and admin["containerPort"] == port_of(config["admin"]["listen"]), "admin.listen port != containerPort admin")
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    listeners = {"listen": config["listen"], "admin.listen": config["admin"]["listen"]}
    if "EGRESSD_LISTEN_TLS" in env or "listen_tls" in config:
        listeners["listen_tls"] = env.get("EGRESSD_LISTEN_TLS") or config["listen_tls"]
    for key, listen in listeners.items():
        check(str(listen).startswith("[::]:"), f"{key} {listen} must bind [::] (IPv4 and IPv6) in a pod")
    for s in by_kind.get("Service", []):
        check(s["spec"].get("ipFamilyPolicy") in DUAL_STACK,
              f"Service/{s['metadata']['name']}: ipFamilyPolicy should be PreferDualStack (IPv6 and dual-stack clusters)")
    svc_proxy = named(service["spec"]["ports"], "proxy")
    check(svc_proxy and svc_proxy["targetPort"] in ("proxy", port_of(config["listen"])), "Service proxy port does not target the proxy")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") in ("admin", port_of(config["admin"]["listen"])),
              f"{probe} is not GET {path} on the admin port")

    # Config file path and mount.
    check(container["args"] == ["run", "--config", CONFIG_PATH], f"args {container['args']}")
    mount = named(container["volumeMounts"], "config")
    check(mount and mount["mountPath"] == os.path.dirname(CONFIG_PATH) and "subPath" not in mount,
          "the ConfigMap must be mounted as the directory of the config path (no subPath: reloads)")

    # Drain period.
    grace = duration_seconds(config.get("shutdown", {}).get("grace", "30s"))
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    term = pod.get("terminationGracePeriodSeconds", 30)
    check(term > pre_stop + grace, f"terminationGracePeriodSeconds {term} <= preStop {pre_stop} + grace {grace}")

    # TLS listener, when on: env, port and Service agree.
    proxy_ports = [proxy["containerPort"]]
    if "listen_tls" in listeners:
        tls_port = port_of(listeners["listen_tls"])
        proxy_ports.append(tls_port)
        check((named(container["ports"], "proxy-tls") or {}).get("containerPort") == tls_port, "TLS port != containerPort proxy-tls")
        check(named(service["spec"]["ports"], "proxy-tls") is not None, "Service lacks proxy-tls")

    policies = by_kind.get("NetworkPolicy", [])
    mine = [p for p in policies if p["spec"]["podSelector"].get("matchLabels") == selector]
    own = [p for p in mine if "Egress" in p["spec"].get("policyTypes", [])]
    agent_policies = [p for p in policies if p["spec"]["podSelector"] == {}]
    agent_policies += [admin_policy_as_network_policy(a, errors) for a in by_kind.get("AdminNetworkPolicy", [])]
    namespace = deployment["metadata"].get("namespace", "egressd")
    agent_namespaces = sorted({p["metadata"]["namespace"] for p in agent_policies}
                              | {c["metadata"]["namespace"] for c in by_kind.get("ConfigMap", [])
                                 if c["metadata"]["name"] == "egressd-proxy-env"})

    # egressd's own egress: every port the config's allow rules and vendor profiles use, to public addresses of
    # both families, and each destinations.allow_cidrs CIDR on those ports. Otherwise the policy drops what the
    # config allows, silently (a connect timeout).
    if own:
        names = ", ".join(p["metadata"]["name"] for p in own)
        wanted = config_ports(config, errors)
        for first, last, what in wanted:
            for net in PUBLIC:
                closed = [p for p in range(first, last + 1) if not egress_reaches(own, net, p)]
                if closed:
                    span = f"port {first}" if first == last else f"ports {first}-{last} ({closed[0]} first)"
                    errors.append(f"{what} uses {span}, closed to public IPv{net.version} addresses by egressd's "
                                  f"egress NetworkPolicy ({names})")
        own_cidrs = [(c, f"allow rule {r.get('name')} private_cidrs") for r in config.get("allow") or []
                     for c in r.get("private_cidrs") or []]
        own_cidrs += [(c, f"vendors item {v.get('name')} private_cidrs") for v in config.get("vendors") or []
                      if isinstance(v, dict) for c in v.get("private_cidrs") or []]
        for cidr, what in own_cidrs:
            net = ipaddress.ip_network(cidr, strict=False)
            if not any(egress_reaches(own, net, p) for first, last, _ in wanted for p in (first, last)):
                errors.append(f"{what} {cidr} is not reachable through egressd's egress NetworkPolicy ({names})")
        for cidr in ((config.get("destinations") or {}).get("allow_cidrs") or []):
            net = ipaddress.ip_network(cidr, strict=False)
            ports = sorted({p for first, last, _ in wanted for p in range(first, last + 1)})
            closed = [p for p in ports if not egress_reaches(own, net, p)]
            if closed:
                errors.append(f"destinations.allow_cidrs {cidr} is not reachable on port(s) {closed} through egressd's "
                              f"egress NetworkPolicy ({names}): add an ipBlock for it")
        own_dns = set().union(*(dns_peers(p) for p in own))
        check(own_dns, f"egressd's egress NetworkPolicy ({names}) allows DNS (UDP and TCP 53) nowhere")
        for p in agent_policies:
            check(dns_peers(p) == own_dns,
                  f"the DNS peers of the agent NetworkPolicy in {p['metadata']['namespace']} differ from egressd's "
                  "(apply the same DNS preset or component to both)")
        if values is not None:
            preset = values["networkPolicy"]["dns"]["preset"]
            expected = {"gke-cloud-dns": "169.254.169.254/32", "node-local-dns": "169.254.20.10/32"}.get(preset)
            if expected:
                check(json.dumps({"ipBlock": {"cidr": expected}}, sort_keys=True) in own_dns,
                      f"networkPolicy.dns.preset {preset}: {expected} is not a DNS peer")

    # Parent proxies: their credentials are mounted Secret files, and egressd's egress policies reach them.
    errors.extend(parent_errors(config, pod, container, own, ", ".join(p["metadata"]["name"] for p in own)))

    # Workload identity: the token, the RBAC and the way to the API server, exactly when a group needs them.
    errors.extend(workload_errors(docs, config, deployment, own, agent_policies, values))

    # Who may use the proxy: an ingress policy on egressd's pods admits the agent namespaces on the proxy
    # ports, never every source, and Prometheus on the admin port.
    ingress = [p for p in mine if "Ingress" in p["spec"].get("policyTypes", [])]
    if own or agent_policies:
        check(ingress, "no ingress NetworkPolicy selects egressd's pods: every pod in the cluster could use the proxy")
    rules = [r for p in ingress for r in p["spec"].get("ingress") or []]
    for r in rules:
        open_to_all = not r.get("from") or any(
            peer_covers(peer, net) for peer in r["from"] for net in PUBLIC)
        check(not open_to_all, "an ingress rule of egressd's NetworkPolicy admits every source")
    if ingress:
        for ns in agent_namespaces:
            for port in proxy_ports:
                check(any(port_open(r, port) and any(
                    (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == ns
                    for peer in r.get("from") or []) for r in rules),
                    f"egressd's ingress NetworkPolicy does not admit namespace {ns} on proxy port {port}")
        if by_kind.get("ServiceMonitor"):
            check(any(port_open(r, admin["containerPort"]) for r in rules),
                  f"egressd's ingress NetworkPolicy does not admit Prometheus on the admin port {admin['containerPort']}")

    # Agent namespaces.
    for p in agent_policies:
        to_proxy = [r for r in p["spec"]["egress"] if any(t.get("podSelector", {}).get("matchLabels") == selector for t in r.get("to", []))]
        check(to_proxy and any(port.get("port") == proxy["containerPort"] for port in to_proxy[0].get("ports", [])),
              f"agent NetworkPolicy in {p['metadata']['namespace']} does not reach the proxy port")
    # The agents' NO_PROXY and their NetworkPolicy agree (README "Rollout order" and agentNetwork).
    envs = {c["metadata"]["namespace"]: c["data"] for c in by_kind.get("ConfigMap", [])
            if c["metadata"]["name"] == "egressd-proxy-env"}
    for p in agent_policies:
        ns = p["metadata"]["namespace"]
        check((p["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "agent-egress-policy",
              f"agent NetworkPolicy in {ns} lacks the label app.kubernetes.io/component: agent-egress-policy "
              "(the rollout applies it last by that label)")
        if ns not in envs:
            errors.append(f"agent NetworkPolicy in {ns} without an egressd-proxy-env ConfigMap: nothing says what "
                          "the agents send direct")
            continue
        check(envs[ns].get("NO_PROXY") == envs[ns].get("no_proxy"), f"{ns}/egressd-proxy-env: NO_PROXY != no_proxy")
        errors.extend(agent_network_errors(p, envs[ns].get("NO_PROXY") or "", selector))
        # A vendor's own private endpoint (private_cidrs) goes through egressd: NO_PROXY must not send it direct.
        direct = [as_net(e) for e in (envs[ns].get("NO_PROXY") or "").split(",")]
        for r in list(config.get("allow") or []) + [v for v in config.get("vendors") or [] if isinstance(v, dict)]:
            for c in r.get("private_cidrs") or []:
                net = ipaddress.ip_network(c, strict=False)
                for d in direct:
                    if d is not None and d.version == net.version and d.overlaps(net):
                        errors.append(f"NO_PROXY in {ns} sends {d} direct, which holds {c} of {r.get('name')}'s "
                                      "private_cidrs: agents would go around egressd (narrow agentNetwork's CIDRs)")
    url = f"http://{service['metadata']['name']}.{namespace}.svc:{svc_proxy['port']}"
    for c in by_kind.get("ConfigMap", []):
        if c["metadata"]["name"] == "egressd-proxy-env":
            for key in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
                check(c["data"].get(key) == url, f"{c['metadata']['namespace']}/egressd-proxy-env {key} is not {url}")

    # The ServiceMonitor (no bundled schema) selects the Service and scrapes a port it has, on /metrics.
    service_labels = service["metadata"].get("labels") or {}
    for sm in by_kind.get("ServiceMonitor", []):
        selector_labels = sm["spec"]["selector"]["matchLabels"]
        check(all(service_labels.get(k) == v for k, v in selector_labels.items()), "ServiceMonitor does not select the Service")
        for ep in sm["spec"]["endpoints"]:
            check(named(service["spec"]["ports"], ep["port"]) is not None, f"ServiceMonitor port {ep['port']} is not on the Service")
            check(ep.get("path") == "/metrics", "ServiceMonitor path is not /metrics")
        check(sm["metadata"].get("namespace") == namespace, "ServiceMonitor is not in egressd's namespace")

    # The labels a Prometheus install selects on (release: ...) reach the ServiceMonitor and PrometheusRule.
    if values is not None:
        for kind, key in (("ServiceMonitor", ("metrics", "serviceMonitor")), ("PrometheusRule", ("alerts", "prometheusRule"))):
            wanted_labels = values[key[0]][key[1]].get("labels") or {}
            for d in by_kind.get(kind, []):
                labels = d["metadata"].get("labels") or {}
                missing = {k: v for k, v in wanted_labels.items() if labels.get(k) != v}
                check(not missing, f"{kind}/{d['metadata']['name']} lacks the labels {missing} of {'.'.join(key)}.labels")
    return errors, config


# --- self-test: each check must catch its breakage ---


def self_test(rendered):
    docs, values = load(rendered)
    errors, _ = check_set(docs, values)
    if errors:
        return [f"{rendered}: the self-test needs a set that passes: {errors}"]

    def find(ds, kind, pred=lambda d: True):
        return [d for d in ds if d["kind"] == kind and pred(d)]

    def egressd_config(ds):
        c = next(c for c in find(ds, "ConfigMap") if "egressd.yaml" in c["data"])
        return c, yaml.safe_load(c["data"]["egressd.yaml"])

    def edit_config(f):
        def go(ds, vals):
            c, cfg = egressd_config(ds)
            f(cfg)
            c["data"]["egressd.yaml"] = yaml.safe_dump(cfg)
        return go

    def own(ds, policy_type):
        return [p for p in find(ds, "NetworkPolicy") if p["spec"]["podSelector"].get("matchLabels")
                and policy_type in p["spec"]["policyTypes"]]

    def drop_port_443(ds, vals):
        for p in own(ds, "Egress"):
            for r in p["spec"]["egress"]:
                r["ports"] = [x for x in r.get("ports") or [] if x.get("port") != 443] or [{"protocol": "TCP", "port": 1}]

    def open_ingress(ds, vals):
        own(ds, "Ingress")[0]["spec"]["ingress"][0].pop("from", None)

    def drop_agent_ingress(ds, vals):
        for p in own(ds, "Ingress"):
            p["spec"]["ingress"] = [r for r in p["spec"]["ingress"] if not any(
                "kubernetes.io/metadata.name" in (peer.get("namespaceSelector") or {}).get("matchLabels", {})
                and not peer.get("podSelector") for peer in r.get("from") or [])]

    def agent_dns_elsewhere(ds, vals):
        p = [p for p in find(ds, "NetworkPolicy") if p["spec"]["podSelector"] == {}][0]
        for r in p["spec"]["egress"]:
            if port_open(r, 53, "UDP") and r.get("to"):
                r["to"] = [{"ipBlock": {"cidr": "192.0.2.53/32"}}]

    def agent_policy(ds):
        return [p for p in find(ds, "NetworkPolicy") if p["spec"]["podSelector"] == {}][0]

    def drop_metadata_rule(ds, vals):
        p = agent_policy(ds)
        p["spec"]["egress"] = [r for r in p["spec"]["egress"] if not any(
            t.get("ipBlock", {}).get("cidr") == "169.254.169.254/32" and port_open(r, 80) for t in r.get("to") or [])]

    def drop_in_cluster_rule(ds, vals):
        p = agent_policy(ds)
        p["spec"]["egress"] = [r for r in p["spec"]["egress"] if {"namespaceSelector": {}} not in (r.get("to") or [])]

    def open_extra_cidr(ds, vals):
        agent_policy(ds)["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "10.99.0.0/16"}}]})

    def drop_pod_cidr_from_no_proxy(ds, vals):
        ns = agent_policy(ds)["metadata"]["namespace"]
        env = next(c for c in find(ds, "ConfigMap") if c["metadata"]["name"] == "egressd-proxy-env"
                   and c["metadata"]["namespace"] == ns)
        for k in ("NO_PROXY", "no_proxy"):
            env["data"][k] = ",".join(e for e in env["data"][k].split(",") if "/" not in e)

    def drop_labels(kind):
        def go(ds, vals):
            for d in find(ds, kind):
                d["metadata"]["labels"] = {"app.kubernetes.io/name": "egressd"}
        return go

    def open_admin_policy(ds, vals):
        anp = find(ds, "AdminNetworkPolicy")[0]
        anp["spec"]["egress"] = anp["spec"]["egress"][:-1]

    def widen_admin_policy(ds, vals):
        anp = find(ds, "AdminNetworkPolicy")[0]
        anp["spec"]["egress"].insert(0, {"name": "x", "action": "Allow", "to": [{"networks": ["203.0.113.0/24"]}]})

    has_agents = any(p["spec"]["podSelector"] == {} for p in find(docs, "NetworkPolicy"))
    cases = [
        ("enableServiceLinks", lambda ds, v: find(ds, "Deployment")[0]["spec"]["template"]["spec"].pop("enableServiceLinks")),
        ("must bind [::]", edit_config(lambda c: c.update(listen="0.0.0.0:3128"))),
        ("admin.listen 0.0.0.0:9090 must bind [::]", edit_config(lambda c: c["admin"].update(listen="0.0.0.0:9090"))),
        ("ipFamilyPolicy", lambda ds, v: find(ds, "Service")[0]["spec"].pop("ipFamilyPolicy")),
        ("allow rule on-prem uses port 8444, closed", edit_config(
            lambda c: c.setdefault("allow", []).append({"name": "on-prem", "hosts": ["a.example"], "ports": [8444]}))),
        ("allow rule range uses ports 9000-9100", edit_config(
            lambda c: c.setdefault("allow", []).append({"name": "range", "hosts": ["a.example"], "ports": ["9000-9100"]}))),
        ("destinations.allow_cidrs 10.99.0.0/16 is not reachable", edit_config(
            lambda c: c.setdefault("destinations", {}).setdefault("allow_cidrs", []).append("10.99.0.0/16"))),
        ("allow rule own private_cidrs 10.98.0.0/24 is not reachable", edit_config(
            lambda c: c.setdefault("allow", []).append({"name": "own", "hosts": ["own.example"],
                                                        "private_cidrs": ["10.98.0.0/24"]}))),
        ("vendor profile rule", drop_port_443),
        ("no ingress NetworkPolicy", lambda ds, v: ds.remove(own(ds, "Ingress")[0])),
        ("admits every source", open_ingress),
    ]
    if has_agents:
        cases += [("does not admit namespace", drop_agent_ingress), ("DNS peers of the agent NetworkPolicy", agent_dns_elsewhere),
                  ("opens 10.99.0.0/16, which NO_PROXY does not send direct", open_extra_cidr),
                  ("names direct but the agent NetworkPolicy does not let the agents reach", drop_in_cluster_rule),
                  ("which NO_PROXY does not send direct (agents never use it", drop_pod_cidr_from_no_proxy)]
        policy = [p for p in find(docs, "NetworkPolicy") if p["spec"]["podSelector"] == {}][0]
        if any(t.get("ipBlock", {}).get("cidr") == "169.254.169.254/32" and port_open(r, 80)
               for r in policy["spec"]["egress"] for t in r.get("to") or []):
            cases.append(("sends 169.254.169.254 direct but the agent NetworkPolicy drops it", drop_metadata_rule))
    def own_endpoint_in_no_proxy(ds, vals):
        c, cfg = egressd_config(ds)
        ns = agent_policy(ds)["metadata"]["namespace"]
        env = next(x for x in find(ds, "ConfigMap") if x["metadata"]["name"] == "egressd-proxy-env"
                   and x["metadata"]["namespace"] == ns)
        first = next(e for e in env["data"]["NO_PROXY"].split(",") if "/" in e)
        cfg.setdefault("allow", []).append({"name": "own", "hosts": ["own.example"],
                                            "private_cidrs": [str(ipaddress.ip_network(first, strict=False))]})
        c["data"]["egressd.yaml"] = yaml.safe_dump(cfg)

    if has_agents:
        cases.append(("private_cidrs: agents would go around egressd", own_endpoint_in_no_proxy))
    if find(docs, "AdminNetworkPolicy"):
        cases += [("does not end with a Deny of 0.0.0.0/0", open_admin_policy),
                  ("opens 203.0.113.0/24, which NO_PROXY does not send direct", widen_admin_policy)]
    def parent_volume(ds):
        d = find(ds, "Deployment")[0]
        pod = d["spec"]["template"]["spec"]
        _, cfg = egressd_config(ds)
        path = next(p["credentials_file"] for p in cfg["parents"] if p.get("credentials_file"))
        src = mounted_source(pod, named(pod["containers"], "egressd"), path)
        return pod, src

    def unmount_credentials(ds, vals):
        pod, src = parent_volume(ds)
        c = named(pod["containers"], "egressd")
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != src["mount"]["name"]]

    def credentials_in_configmap(ds, vals):
        pod, src = parent_volume(ds)
        v = src["volume"]
        if "secret" in v:
            s = v.pop("secret")
            v["configMap"] = {"name": s["secretName"], **({"items": s["items"]} if s.get("items") else {})}
        for s in (v.get("projected") or {}).get("sources") or []:
            if "secret" in s:
                s["configMap"] = s.pop("secret")

    def writable_credentials(ds, vals):
        _, src = parent_volume(ds)
        src["mount"]["readOnly"] = False

    def annotated(ds):
        return [p for p in own(ds, "Egress") if PARENT_CIDRS in (p["metadata"].get("annotations") or {})]

    def close_parents(ds, vals):
        for p in annotated(ds):
            cidrs = {c for cs in json.loads(p["metadata"]["annotations"][PARENT_CIDRS]).values() for c in cs}
            p["spec"]["egress"] = [r for r in p["spec"]["egress"] if not any(
                (t.get("ipBlock") or {}).get("cidr") in cidrs for t in r.get("to") or [])] or [
                {"to": [{"ipBlock": {"cidr": "192.0.2.99/32"}}], "ports": [{"protocol": "TCP", "port": 1}]}]

    def forget_parent_cidrs(ds, vals):
        for p in annotated(ds):
            del p["metadata"]["annotations"][PARENT_CIDRS]

    def rename_parent(ds, vals):
        edit_config(lambda c: c["parents"][0].update(name="renamed"))(ds, vals)

    _, cfg = egressd_config(docs)
    parents = cfg.get("parents") or []
    if any(p.get("credentials_file") for p in parents):
        cases += [("no ConfigMap or Secret volume of the egressd container mounts that file", unmount_credentials),
                  ("credentials belong in a Secret", credentials_in_configmap),
                  ("is not mounted read-only", writable_credentials)]
    if parents and annotated(docs):
        cases += [("is not reachable on port", close_parents),
                  ("names no address for it", forget_parent_cidrs),
                  ("which the config does not have", rename_parent)]
    def pod_spec(ds):
        return next(d for d in find(ds, "Deployment") if d["metadata"]["name"].endswith("egressd"))["spec"]["template"]["spec"]

    def no_token(ds, vals):
        pod_spec(ds)["automountServiceAccountToken"] = False

    def with_token(ds, vals):
        pod_spec(ds)["automountServiceAccountToken"] = True

    def role(ds):
        return find(ds, "ClusterRole")[0]

    def unbind(ds, vals):
        for b in find(ds, "ClusterRoleBinding"):
            ds.remove(b)

    def no_watch(ds, vals):
        for r in role(ds)["rules"]:
            r["verbs"] = [v for v in r["verbs"] if v != "watch"]

    def read_secrets(ds, vals):
        role(ds)["rules"][0]["resources"].append("secrets")

    def bind_without_groups(ds, vals):
        d = next(d for d in find(ds, "Deployment") if d["metadata"]["name"].endswith("egressd"))
        account = d["spec"]["template"]["spec"].get("serviceAccountName") or "default"
        ds.append({"kind": "ClusterRoleBinding", "metadata": {"name": "x"},
                   "roleRef": {"kind": "ClusterRole", "name": "view", "apiGroup": "rbac.authorization.k8s.io"},
                   "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": d["metadata"]["namespace"]}]})

    def api_annotated(ds):
        return [p for p in own(ds, "Egress") if API_SERVER in (p["metadata"].get("annotations") or {})]

    def close_api_server(ds, vals):
        for p in api_annotated(ds):
            cidrs = set(p["metadata"]["annotations"][API_SERVER].split(","))
            p["spec"]["egress"] = [r for r in p["spec"]["egress"] if not any(
                (t.get("ipBlock") or {}).get("cidr") in cidrs for t in r.get("to") or [])] or [
                {"to": [{"ipBlock": {"cidr": "192.0.2.99/32"}}], "ports": [{"protocol": "TCP", "port": 1}]}]

    def forget_api_server(ds, vals):
        for p in api_annotated(ds):
            del p["metadata"]["annotations"][API_SERVER]

    def other_api_server(ds, vals):
        agent_policy(ds)["metadata"]["annotations"][API_SERVER] = "198.51.100.1/32"

    if workload_groups(cfg):
        cases += [("does not mount its service account token", no_token),
                  ("grants list and watch on pods", unbind),
                  ("(granted: ['get', 'list'])", no_watch),
                  ("egressd needs only get, list and watch on pods", read_secrets),
                  ("names no API server", forget_api_server),
                  ("is not reachable on port 6443", close_api_server)]
        if has_agents:
            cases.append(("differs from the agent NetworkPolicy's", other_api_server))
    else:
        cases += [("mounts its service account token but no client group uses", with_token),
                  ("but no client group uses workload identity", bind_without_groups)]
    if values is not None and values["metrics"]["serviceMonitor"].get("labels") and find(docs, "ServiceMonitor"):
        cases.append(("ServiceMonitor/egressd lacks the labels", drop_labels("ServiceMonitor")))
    if values is not None and values["alerts"]["prometheusRule"].get("labels") and find(docs, "PrometheusRule"):
        cases.append(("PrometheusRule/egressd lacks the labels", drop_labels("PrometheusRule")))
    failures = []
    for expected, breakage in cases:
        broken = copy.deepcopy(docs)
        breakage(broken, values)
        errs, _ = check_set(broken, values)
        if not any(expected in e for e in errs):
            failures.append(f"{rendered}: breaking it ({expected!r}) was not caught; errors: {errs}")
    print(f"{os.path.basename(rendered)}: {len(cases)} breakages caught")
    return failures


def main():
    if sys.argv[1] == "--self-test":
        failures = [f for r in sys.argv[2:] for f in self_test(r)]
        for f in failures:
            print(f, file=sys.stderr)
        return 1 if failures else 0
    rendered, out_dir = sys.argv[1], sys.argv[2]
    docs, values = load(rendered)
    errors, config = check_set(docs, values)
    for e in errors:
        print(f"{rendered}: {e}", file=sys.stderr)
    if out_dir == "-":
        return 1 if errors else 0
    configmap = next(c for c in docs if c["kind"] == "ConfigMap" and os.path.basename(CONFIG_PATH) in (c.get("data") or {}))
    os.makedirs(out_dir, exist_ok=True)
    name = os.path.basename(rendered)
    text, notes = config_for_validate(docs, copy.deepcopy(config), out_dir, name[:-len(".yaml")])
    for n in notes:
        print(f"{name}: for egressd validate, a copy of {n}")
    with open(os.path.join(out_dir, name), "w") as f:
        f.write(text or configmap["data"][os.path.basename(CONFIG_PATH)])
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
