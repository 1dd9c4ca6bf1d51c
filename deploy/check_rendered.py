#!/usr/bin/env python3
"""Cross-checks one rendered set of egressd objects (a kustomize build or a Helm render), the way
tests/deploy_manifests.rs checks the kustomize sources:

- the config's listen port is the container's "proxy" port and the Service's proxy target; the admin port is
  the one the probes use, on /healthz and /readyz;
- args name the config file the ConfigMap volume mounts (a directory mount, never subPath);
- terminationGracePeriodSeconds covers the preStop sleep plus shutdown.grace;
- egressd's egress NetworkPolicy opens every port the config's allow rules name (443 by default);
- an agent NetworkPolicy lets agents reach the proxy port; an agent ConfigMap points at the Service;
- every object but the Namespace has a namespace;
- a ServiceMonitor selects the Service and scrapes a port it has, on /metrics.

usage: check_rendered.py RENDERED.yaml CONFIG_OUT_DIR   (writes the egressd config for `egressd validate`)
"""
import os
import re
import sys

import yaml

CONFIG_PATH = "/etc/egressd/egressd.yaml"
errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)


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


def main():
    rendered, out_dir = sys.argv[1], sys.argv[2]
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    # Every object but the Namespace names its namespace, so nothing lands in the kubectl context's default.
    for d in docs:
        if d["kind"] != "Namespace":
            check(d["metadata"].get("namespace"), f"{d['kind']}/{d['metadata']['name']} has no namespace")

    deployment = next(d for d in by_kind["Deployment"] if d["metadata"]["name"].endswith("egressd"))
    pod = deployment["spec"]["template"]["spec"]
    container = named(pod["containers"], "egressd")
    service = next(s for s in by_kind["Service"] if s["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"])
    volume = named(pod["volumes"], "config")
    configmap = next(c for c in by_kind["ConfigMap"] if c["metadata"]["name"] == volume["configMap"]["name"])
    config_text = configmap["data"][os.path.basename(CONFIG_PATH)]
    config = yaml.safe_load(config_text)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, os.path.basename(rendered)), "w") as f:
        f.write(config_text)

    # Ports and probes.
    proxy = named(container["ports"], "proxy")
    admin = named(container["ports"], "admin")
    check(proxy and proxy["containerPort"] == port_of(config["listen"]), "listen port != containerPort proxy")
    check(str(config["listen"]).startswith("0.0.0.0:"), "listen must bind 0.0.0.0 in a pod")
    check(admin and admin["containerPort"] == port_of(config["admin"]["listen"]), "admin.listen port != containerPort admin")
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
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    if "EGRESSD_LISTEN_TLS" in env or "listen_tls" in config:
        tls_port = port_of(env.get("EGRESSD_LISTEN_TLS") or config["listen_tls"])
        check((named(container["ports"], "proxy-tls") or {}).get("containerPort") == tls_port, "TLS port != containerPort proxy-tls")
        check(named(service["spec"]["ports"], "proxy-tls") is not None, "Service lacks proxy-tls")

    # egressd's own egress.
    selector = deployment["spec"]["selector"]["matchLabels"]
    policies = by_kind.get("NetworkPolicy", [])
    own = [p for p in policies if p["spec"]["podSelector"].get("matchLabels") == selector]
    if own:
        open_ports = {p.get("port") for rule in own[0]["spec"]["egress"] for p in rule.get("ports", []) if p.get("protocol", "TCP") == "TCP"}
        wanted = {443}
        for rule in config.get("allow") or []:
            wanted.update(p for p in rule.get("ports") or [] if isinstance(p, int))
        check(wanted <= open_ports, f"allow rules use ports {sorted(wanted - open_ports)}, closed by the egress NetworkPolicy")

    # Agent namespaces.
    namespace = deployment["metadata"].get("namespace", "egressd")
    for p in policies:
        if p["spec"]["podSelector"] == {}:
            to_proxy = [r for r in p["spec"]["egress"] if any(t.get("podSelector", {}).get("matchLabels") == selector for t in r.get("to", []))]
            check(to_proxy and any(port.get("port") == proxy["containerPort"] for port in to_proxy[0].get("ports", [])),
                  f"agent NetworkPolicy in {p['metadata']['namespace']} does not reach the proxy port")
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

    if errors:
        for e in errors:
            print(f"{rendered}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
