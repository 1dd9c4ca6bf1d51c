#!/usr/bin/env python3
"""Start egressd the way the kubelet starts it, from a rendered set of Kubernetes objects, and check it serves.

Usage: pod_emulation.py RENDERED.yaml EGRESSD_BINARY [DOCKERFILE]   (as root; run by deploy/check.sh)

For every Deployment in RENDERED.yaml whose container runs egressd, the container gets what a kubelet gives it:

- argv: `command`/`args` over the image's ENTRYPOINT/CMD (from the Dockerfile), `$(VAR)` expanded;
- environment: KUBERNETES_SERVICE_HOST/_PORT and the kubelet's KUBERNETES_PORT_* set, the service-link variables
  of every Service in the namespace unless `enableServiceLinks: false`, `envFrom` then `env` (ConfigMap and
  Secret keys, `fieldRef`, `resourceFieldRef`), HOSTNAME, the image's PATH and HOME;
- a root filesystem of its own (mount namespace): the binary and its libraries, /etc/passwd of the distroless
  image, the kubelet's /etc/hosts (with `hostAliases`), /etc/resolv.conf (ClusterFirst: search domains,
  `ndots:5`), /etc/hostname, a minimal /dev and /proc in a PID namespace where egressd is PID 1;
- every ConfigMap, Secret and projected (ConfigMap and Secret sources) volume at its mountPath in the kubelet's
  layout (a timestamped directory, a `..data` symlink to it and a symlink per key or item path; `subPath` mounts
  as plain files), read-only. A Secret the render names but does not contain (the user creates it at install)
  comes from deploy/install-secrets.yaml, or else is a kubernetes.io/tls Secret with a fresh self-signed
  certificate;
- the securityContext: user, group, fsGroup, readOnlyRootFilesystem (the whole root is remounted read-only),
  no_new_privs, no capabilities;
- a network namespace of its own with the pod's IPv4 and IPv6 addresses on eth0 (a veth pair whose peer stays in
  that namespace: nothing leaves it; with parent proxies or an API server, the peer is in the node's namespace,
  where they listen, and only their addresses are routed to it).

Then: the startup, readiness and liveness probes as written (named ports resolved) on the pod's IPv4 and IPv6
addresses; one refused (the metadata address) and one allowed request through the container port (and the TLS port when there is
one), the allowed one to a TLS origin on 127.0.0.1 in the pod's network namespace that a `hostAliases` entry of
the emulation names, with `EGRESSD_DESTINATIONS__ALLOW_CIDRS=127.0.0.0/8` added to the environment (the only two
additions besides the parents' below; all are printed); a ConfigMap update by the kubelet's symlink swap that adds
a deny rule, which must be reloaded and then refuse the allowed host; and the stop: `preStop` (sleep) while the
proxy keeps serving, then SIGTERM, after which egressd must exit 0 within the rest of
`terminationGracePeriodSeconds`.

Where the config has `parents:`, each gets a stand-in: a CONNECT proxy in a network namespace behind the pod's
veth, at the parent's IP address or, for a name, at the first address egressd's egress NetworkPolicy names for
it (egressd.io/parent-cidrs), with a `hostAliases` entry for the name. It expects the Proxy-Authorization of the
credentials the pod's mounted file holds (407 otherwise) and tunnels the allowed host to the origin. When
`egressd check` routes the allowed host through parents, the allowed requests must go through the first one
(the decision lines' `via`, what it saw, `egressd_parent_attempts_total` in /metrics); then the credentials'
Secret is updated by the kubelet's symlink swap, which must be reloaded, and the next request must carry the new
credentials.

Where the pod mounts its service account token (automountServiceAccountToken, the pod's or else its
ServiceAccount's, default true), it gets the kubelet's token directory at /var/run/secrets/kubernetes.io/
serviceaccount (token, ca.crt, namespace) and a stand-in API server (deploy/emulated_apiserver.py) at
KUBERNETES_SERVICE_HOST:443, in the node's network namespace behind the pod's veth: HTTPS with a certificate for
that address from the mounted CA, the token required, requests authorized as the rendered RBAC bound to the pod's
ServiceAccount would. Without a client group by namespaces, service_accounts or pod_labels, egressd must ask it
nothing. With one, the emulation sets kubernetes.stale_after (EGRESSD_KUBERNETES__STALE_AFTER, printed), finds a
host `egressd check` allows only to such a group (--client) and to none of the emulation's addresses (--from),
and lists a pod of that group at an address of the node's namespace from which its client connects (IPv4 and
IPv6), a running pod of another namespace, a Succeeded pod and a hostNetwork pod of the group. It holds the first
pod list: until it is served, egressd must have asked for pods with the token and within its RBAC, answer 503 on
readiness and refuse the group's pod. Then the group's pod must be allowed through every proxy port as a member
of the group (the decision line's `client`; where no host is allowed to every client, these are the allowed
requests above), the other three refused; a pod the watch adds must be allowed and, once deleted, refused; with
the API server gone, the group's pod must stay allowed at first, be refused after stale_after while readiness
stays 200, and be allowed again once the API server is back.
"""

import base64
import ctypes
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import yaml

sys.dont_write_bytecode = True  # the modules next to this one, without a __pycache__ in the checkout
from check_rendered import WORKLOAD_FIELDS, bound_rules, token_mounted  # noqa: E402
from emulated_apiserver import EmulatedApiServer, make_certificates  # noqa: E402

POD_IP4 = "10.244.0.7"
POD_IP6 = "fd00:10:244::7"
# The other end of the pod's veth, in a network namespace of its own (the node's), through which the parent
# proxies' and the API server's addresses are routed and where the agents' pods are (when there are any).
NODE_IP4 = "10.244.0.1"
NODE_IP6 = "fd00:10:244::1"
NODE_NETNS = "egressd-node"
KUBERNETES_SVC = "10.96.0.1"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Workload identity: the pods the stand-in API server lists, at addresses in the node's namespace from which the
# emulation's client connects. AGENT: a pod of the group under test (IPv4 and IPv6); OTHER: a running pod of
# another namespace; SUCCEEDED: a finished pod of the group (its address free for another pod); HOST_NETWORK: a
# hostNetwork pod of the group (its podIP is the node's, shared with everything on it); ADDED: a pod of the group
# the watch announces, then deletes.
AGENT_IP4, AGENT_IP6 = "10.244.0.23", "fd00:10:244::23"
OTHER_IP4 = "10.244.0.24"
SUCCEEDED_IP4 = "10.244.0.25"
HOST_NETWORK_IP4 = "10.244.0.26"
ADDED_IP4 = "10.244.0.27"
# kubernetes.stale_after while the emulation runs (an added variable, printed): the API server is taken away once.
STALE_AFTER = 5
CLUSTER_DNS = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
NODE_NAME = "emulated-node"
# The distroless image's environment and users (gcr.io/distroless/cc-debian12:nonroot).
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" \
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
IMAGE_GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
ORIGIN_PORT = 443
# The refused request: the cloud metadata address, refused in every mode (report mode included) and on every
# configuration, before any lookup or dial.
REFUSED_URL = "https://169.254.169.254/"
INSTALL_SECRETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "install-secrets.yaml")


class Fail(Exception):
    pass


def log(msg):
    print(f"  {msg}", flush=True)


# --- the image -------------------------------------------------------------------------------------------------

def image_from_dockerfile(path):
    """ENTRYPOINT, CMD, USER and WORKDIR of the Dockerfile's last stage."""
    image = {"entrypoint": [], "cmd": [], "user": "0:0", "workdir": "/"}
    stage = []
    for line in open(path):
        line = line.strip()
        if line.upper().startswith("FROM "):
            stage = []
        stage.append(line)
    for line in stage:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word in ("ENTRYPOINT", "CMD"):
            image[word.lower()] = json.loads(rest)
        elif word == "USER":
            image["user"] = rest.strip()
        elif word == "WORKDIR":
            image["workdir"] = rest.strip()
    return image


# --- what the kubelet derives from the objects (pure) ----------------------------------------------------------

def env_name(service):
    return service.upper().replace("-", "_")


def service_env(services):
    """The service-link variables for `services` [(name, cluster_ip, ports)], as the kubelet writes them."""
    env = {}
    for name, ip, ports in services:
        s = env_name(name)
        if not ports:
            continue
        env[f"{s}_SERVICE_HOST"] = ip
        env[f"{s}_SERVICE_PORT"] = str(ports[0]["port"])
        for p in ports:
            if p.get("name"):
                env[f"{s}_SERVICE_PORT_{env_name(p['name'])}"] = str(p["port"])
        first = ports[0]
        env[f"{s}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for p in ports:
            proto = p.get("protocol", "TCP")
            base = f"{s}_PORT_{p['port']}_{proto}"
            env[base] = f"{proto.lower()}://{ip}:{p['port']}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(p["port"])
            env[f"{base}_ADDR"] = ip
    return env


def expand(value, env):
    """Kubernetes `$(VAR)` expansion: defined variables are replaced, `$$` escapes, others stay as written."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def cpu_value(quantity, divisor="1"):
    def millis(q):
        q = str(q)
        return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)
    return str(max(1, -(-millis(quantity) // millis(divisor))))


def memory_bytes(quantity):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    q = str(quantity)
    for u, f in units.items():
        if q.endswith(u):
            return str(int(float(q[: -len(u)]) * f))
    return q


class Objects:
    def __init__(self, docs):
        self.docs = [d for d in docs if d]

    def find(self, kind, namespace, name):
        for d in self.docs:
            m = d.get("metadata", {})
            if d.get("kind") == kind and m.get("name") == name and m.get("namespace", "default") == namespace:
                return d
        return None

    def of_kind(self, kind):
        return [d for d in self.docs if d.get("kind") == kind]


def install_secrets():
    """The Secrets of deploy/install-secrets.yaml (created by the user at install, so not in a render):
    {(namespace, name): {key: bytes}}."""
    out = {}
    for d in yaml.safe_load_all(open(INSTALL_SECRETS)):
        if d and d.get("kind") == "Secret":
            out[(d["metadata"].get("namespace", "default"), d["metadata"]["name"])] = secret_data(d)
    return out


def secret_data(secret):
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    data.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
    return data


def configmap_data(cm):
    data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
    return data


def self_signed_tls(name, workdir):
    """A kubernetes.io/tls Secret's data for a Secret the render does not contain (created by the user)."""
    key, crt = os.path.join(workdir, f"{name}.key"), os.path.join(workdir, f"{name}.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=egressd",
                    "-addext", "subjectAltName=DNS:egressd,IP:" + POD_IP4],
                   check=True, capture_output=True)
    return {"tls.crt": open(crt, "rb").read(), "tls.key": open(key, "rb").read(),
            "ca.crt": open(crt, "rb").read()}


def plan_pod(objs, deploy, image, binary, workdir):
    """Everything the kubelet would give the egressd container of `deploy`, as a JSON-able plan."""
    ns = deploy["metadata"].get("namespace", "default")
    spec = deploy["spec"]["template"]["spec"]
    containers = spec["containers"]
    c = next((x for x in containers if x["name"] == "egressd"), containers[0])
    pod_name = f"{deploy['metadata']['name']}-5d4f8b7c9-x2x7q"
    notes = []

    env = {}
    # The API server's Service is always there, service links or not.
    env.update({
        "KUBERNETES_SERVICE_HOST": KUBERNETES_SVC, "KUBERNETES_SERVICE_PORT": "443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "443", "KUBERNETES_PORT": f"tcp://{KUBERNETES_SVC}:443",
        "KUBERNETES_PORT_443_TCP": f"tcp://{KUBERNETES_SVC}:443", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": KUBERNETES_SVC,
    })
    services = [s for s in objs.of_kind("Service") if s["metadata"].get("namespace", "default") == ns]
    if spec.get("enableServiceLinks", True):
        links = service_env([(s["metadata"]["name"], f"10.96.1.{i + 10}", s["spec"].get("ports", []))
                             for i, s in enumerate(services)])
        env.update(links)
        notes.append(f"service links on: {len(links)} variables of {len(services)} Service(s)")
    else:
        notes.append("enableServiceLinks: false (only KUBERNETES_SERVICE_*)")

    limits = (c.get("resources") or {}).get("limits") or {}
    requests = (c.get("resources") or {}).get("requests") or {}
    fields = {"metadata.name": pod_name, "metadata.namespace": ns, "spec.nodeName": NODE_NAME,
              "spec.serviceAccountName": spec.get("serviceAccountName", "default"), "status.podIP": POD_IP4,
              "status.podIPs": f"{POD_IP4},{POD_IP6}", "status.hostIP": "10.0.0.1",
              "metadata.uid": "00000000-0000-4000-8000-000000000001"}

    def ref(kind, r):
        obj = objs.find(kind, ns, r["name"])
        if obj is None:
            if r.get("optional"):
                return None
            raise Fail(f"{kind} {ns}/{r['name']} is referenced but not in the render: the pod would not start "
                       "(CreateContainerConfigError)")
        return configmap_data(obj) if kind == "ConfigMap" else secret_data(obj)

    for src in c.get("envFrom") or []:
        kind = "ConfigMap" if "configMapRef" in src else "Secret"
        data = ref(kind, src.get("configMapRef") or src.get("secretRef"))
        for k, v in (data or {}).items():
            name = src.get("prefix", "") + k
            if re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", name):
                env[name] = v.decode()
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = expand(str(e["value"]), env)
        elif "valueFrom" in e:
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                env[e["name"]] = fields[vf["fieldRef"]["fieldPath"]]
            elif "resourceFieldRef" in vf:
                r = vf["resourceFieldRef"]["resource"]
                which, res = r.split(".", 1)
                q = (limits if which == "limits" else requests).get(res)
                if res == "cpu":
                    env[e["name"]] = cpu_value(q or "1", vf["resourceFieldRef"].get("divisor", "1"))
                else:
                    env[e["name"]] = memory_bytes(q or "0")
            else:
                kind = "ConfigMap" if "configMapKeyRef" in vf else "Secret"
                r = vf.get("configMapKeyRef") or vf.get("secretKeyRef")
                data = ref(kind, r)
                if data is not None and r["key"] in data:
                    env[e["name"]] = data[r["key"]].decode()
                elif not r.get("optional"):
                    raise Fail(f"env {e['name']}: key {r['key']} not in {kind} {r['name']}")
        else:
            env[e["name"]] = ""
    env.setdefault("PATH", IMAGE_PATH)
    env.setdefault("HOSTNAME", pod_name)

    argv = c.get("command") or image["entrypoint"]
    args = c.get("args") if "args" in c else (image["cmd"] if not c.get("command") else [])
    argv = [expand(a, env) for a in argv + (args or [])]
    if argv[0] != "/usr/local/bin/egressd":
        raise Fail(f"the container runs {argv[0]}, not the image's /usr/local/bin/egressd")

    # Security context: the container's fields over the pod's, over the image's USER.
    psc, csc = spec.get("securityContext") or {}, c.get("securityContext") or {}
    img_uid, _, img_gid = image["user"].partition(":")
    uid = int(csc.get("runAsUser", psc.get("runAsUser", img_uid)))
    gid = int(csc.get("runAsGroup", psc.get("runAsGroup", img_gid or 0)))
    if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) and uid == 0:
        raise Fail("runAsNonRoot with UID 0: the kubelet refuses to start the container")
    groups = list(psc.get("supplementalGroups") or [])
    if "fsGroup" in psc:
        groups.append(int(psc["fsGroup"]))
    home = {0: "/root", 65532: "/home/nonroot"}.get(uid, "/")
    env.setdefault("HOME", home)

    # Volumes, in the kubelet's layout.
    fixtures = install_secrets()

    def volume_data(kind, name, optional, volume):
        obj = objs.find(kind, ns, name)
        if obj is not None:
            return configmap_data(obj) if kind == "ConfigMap" else secret_data(obj)
        if kind == "Secret" and (ns, name) in fixtures:
            notes.append(f"Secret {name} is not in the render (created at install): emulated from "
                         f"{os.path.relpath(INSTALL_SECRETS)}")
            return fixtures[(ns, name)]
        if kind == "Secret":
            notes.append(f"Secret {name} is not in the render (created at install): emulated as a "
                         "kubernetes.io/tls Secret with a self-signed certificate")
            return self_signed_tls(name, workdir)
        if optional:
            return {}
        raise Fail(f"ConfigMap {ns}/{name} (volume {volume}) is not in the render: the pod would stay in "
                   "ContainerCreating")

    def project(data, items, kind, name):
        if not items:
            return data
        missing = [i["key"] for i in items if i["key"] not in data]
        if missing:
            raise Fail(f"{kind} {ns}/{name} has no key {missing[0]}: the pod would stay in ContainerCreating")
        return {i["path"]: data[i["key"]] for i in items}

    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    mounts = []
    for m in c.get("volumeMounts") or []:
        v = volumes[m["name"]]
        if "configMap" in v or "secret" in v:
            is_cm = "configMap" in v
            kind = "ConfigMap" if is_cm else "Secret"
            src = v["configMap"] if is_cm else v["secret"]
            name = src["name"] if is_cm else src["secretName"]
            data = project(volume_data(kind, name, src.get("optional"), m["name"]), src.get("items"), kind, name)
            files = {k: base64.b64encode(v).decode() for k, v in data.items()}
            mounts.append({"kind": "configMap" if is_cm else "secret", "object": name, "path": m["mountPath"],
                           "sub_path": m.get("subPath"), "files": files,
                           "origins": {k: f"{kind} {name}" for k in files},
                           "mode": src.get("defaultMode", 0o644), "volume": m["name"]})
        elif "projected" in v:
            data, origins = {}, {}
            for s in v["projected"].get("sources") or []:
                if "secret" not in s and "configMap" not in s:
                    raise Fail(f"volume {m['name']}: only secret and configMap sources of a projected volume are "
                               "emulated")
                kind = "Secret" if "secret" in s else "ConfigMap"
                src = s.get("secret") or s.get("configMap")
                part = project(volume_data(kind, src["name"], src.get("optional"), m["name"]), src.get("items"),
                               kind, src["name"])
                data.update(part)
                origins.update({k: f"{kind} {src['name']}" for k in part})
            files = {k: base64.b64encode(v).decode() for k, v in data.items()}
            mounts.append({"kind": "projected", "object": m["name"], "path": m["mountPath"],
                           "sub_path": m.get("subPath"), "files": files, "origins": origins,
                           "mode": v["projected"].get("defaultMode", 0o644), "volume": m["name"]})
        elif "emptyDir" in v:
            mounts.append({"kind": "emptyDir", "path": m["mountPath"], "volume": m["name"]})
        else:
            raise Fail(f"volume {m['name']}: only configMap, secret, projected and emptyDir volumes are emulated")

    ports = {p["name"]: p["containerPort"] for p in c.get("ports") or [] if p.get("name")}

    def probe(p):
        if not p:
            return None
        h = p.get("httpGet")
        if not h:
            raise Fail("only httpGet probes are emulated")
        port = h["port"]
        if isinstance(port, str) and not port.isdigit():
            if port not in ports:
                raise Fail(f"probe port {port!r} names no container port")
            port = ports[port]
        return {"path": h.get("path", "/"), "port": int(port), "scheme": h.get("scheme", "HTTP").lower(),
                "period": p.get("periodSeconds", 10), "failures": p.get("failureThreshold", 3),
                "timeout": p.get("timeoutSeconds", 1)}

    pre_stop = ((c.get("lifecycle") or {}).get("preStop")) or {}
    if pre_stop and "sleep" not in pre_stop:
        raise Fail("only a preStop sleep is emulated (the image has no shell for exec hooks)")
    aliases = [(a["ip"], a["hostnames"]) for a in spec.get("hostAliases") or []]
    dns = spec.get("dnsConfig") or {}
    search = [f"{ns}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN] + dns.get("searches", [])
    resolv = "search " + " ".join(search) + "\n"
    resolv += "".join(f"nameserver {n}\n" for n in [CLUSTER_DNS] + dns.get("nameservers", []))
    resolv += "options ndots:5" + "".join(
        f" {o['name']}" + (f":{o['value']}" if o.get("value") else "") for o in dns.get("options", [])) + "\n"
    config_mounts = [m for m in mounts if m["kind"] == "configMap" and not m["sub_path"]]
    # The service account token: the pod's automountServiceAccountToken, else the ServiceAccount's, else true (and
    # not where a container mounts something at its directory itself).
    account = spec.get("serviceAccountName") or "default"
    token = token_mounted(spec, objs.find("ServiceAccount", ns, account)) and not any(
        m["path"].rstrip("/") == SA_DIR for m in mounts)
    return {
        "service_account": {"namespace": ns, "name": account, "token": token},
        "name": f"{ns}/{deploy['metadata']['name']}", "pod": pod_name, "argv": argv, "env": env, "uid": uid,
        "gid": gid, "groups": groups, "workdir": c.get("workingDir", image["workdir"]),
        "read_only_root": bool(csc.get("readOnlyRootFilesystem")),
        "no_new_privs": csc.get("allowPrivilegeEscalation") is False,
        "drop_all": "ALL" in ((csc.get("capabilities") or {}).get("drop") or []),
        "mounts": mounts, "ports": ports, "binary": os.path.abspath(binary),
        "probes": {k: probe(c.get(f"{k}Probe")) for k in ("startup", "readiness", "liveness")},
        "pre_stop_sleep": (pre_stop.get("sleep") or {}).get("seconds", 0),
        "grace": spec.get("terminationGracePeriodSeconds", 30), "aliases": aliases, "resolv": resolv,
        "config_mount": config_mounts[0] if config_mounts else None, "notes": notes,
    }


# --- parent proxies ----------------------------------------------------------------------------------------------

PARENT_URL = re.compile(r"(?i)(https?)://(\[[^\]]+\]|[^:/@]+):(\d+)/?")


def basic(credentials):
    """The Proxy-Authorization egressd sends for a credentials file or variable holding user:password."""
    return "Basic " + base64.b64encode(credentials.rstrip(b"\r\n")).decode()


def mounted_file(plan, path):
    """(mount, key) of the file the container sees at `path` in a ConfigMap, Secret or projected directory mount,
    or (None, None)."""
    best = None
    for m in plan["mounts"]:
        root = m["path"].rstrip("/")
        if m["kind"] != "emptyDir" and not m["sub_path"] and path.startswith(root + "/"):
            if best is None or len(root) > len(best[0]["path"].rstrip("/")):
                best = (m, path[len(root) + 1:])
    if best and best[1] in best[0]["files"]:
        return best
    return None, None


def emulated_parents(plan, objs, deploy):
    """A stand-in for each parent proxy of the pod's config: where it listens (url's IP address; for a name, the
    first address egressd's egress NetworkPolicy names for it in egressd.io/parent-cidrs, else one of
    192.0.2.0/24, and a hostAliases entry for the name) and the Proxy-Authorization egressd must send, from the file
    or variable the pod gives it."""
    m = plan["config_mount"]
    key = next((k for k in (m or {}).get("files", {}) if k.endswith(".yaml")), None)
    if not key:
        return []
    cfg = yaml.safe_load(base64.b64decode(m["files"][key])) or {}
    ns = deploy["metadata"].get("namespace", "default")
    selector = deploy["spec"]["selector"]["matchLabels"]
    declared = {}
    for policy in objs.of_kind("NetworkPolicy"):
        if (policy["metadata"].get("namespace", "default") == ns
                and policy["spec"]["podSelector"].get("matchLabels") == selector):
            text = (policy["metadata"].get("annotations") or {}).get("egressd.io/parent-cidrs")
            for name, cidrs in (json.loads(text) if text else {}).items():
                declared.setdefault(name, []).extend(cidrs)
    parents = []
    for i, p in enumerate(cfg.get("parents") or []):
        u = PARENT_URL.fullmatch(str(p.get("url")))
        if not u:
            raise Fail(f"parents[{i}].url {p.get('url')!r}: expected http://host:port")
        if u.group(1).lower() == "https":
            # Requests go to the first parent while it answers: a later TLS parent is never asked here, and its
            # mounted CA bundle has already passed `egressd validate` (deploy/check_rendered.py).
            if i == 0:
                raise Fail(f"parents[{i}]: a first parent with https:// is not emulated (a plain CONNECT proxy "
                           "stands in)")
            log(f"parents[{i}] {p.get('name')}: https://, not emulated (only the first parent is asked)")
            continue
        host, port = u.group(2).strip("[]"), int(u.group(3))
        alias = None
        try:
            address = str(ipaddress.ip_address(host))
        except ValueError:
            alias = host
            cidrs = declared.get(p["name"]) or []
            address = (str(ipaddress.ip_network(cidrs[0], strict=False).network_address) if cidrs
                       else f"192.0.2.{20 + i}")
        authorization, source = None, None
        if p.get("credentials_file"):
            mount, file_key = mounted_file(plan, p["credentials_file"])
            if mount is None:
                raise Fail(f"parents[{i}].credentials_file {p['credentials_file']}: no ConfigMap or Secret mount of "
                           "the container has that file")
            authorization = basic(base64.b64decode(mount["files"][file_key]))
            source = {"path": mount["path"], "key": file_key, "object": mount["origins"][file_key]}
        elif p.get("credentials_env"):
            if p["credentials_env"] not in plan["env"]:
                raise Fail(f"parents[{i}].credentials_env {p['credentials_env']} is not in the container's environment")
            authorization = basic(plan["env"][p["credentials_env"]].encode())
        parents.append({"name": p["name"], "host": host, "port": port, "address": address, "alias": alias,
                        "authorization": authorization, "source": source})
    return parents


class FakeParent:
    """A parent proxy in the pod's network namespace: answers a CONNECT that carries the expected
    Proxy-Authorization (407 otherwise) for the allowed host's port 443 by tunnelling to the emulation's origin,
    and remembers each CONNECT (target, whether its credentials were the expected ones)."""

    def __init__(self, parent, allowed_host):
        self.name, self.authorization, self.allowed_host = parent["name"], parent["authorization"], allowed_host
        self.seen = []
        family = socket.AF_INET6 if ":" in parent["address"] else socket.AF_INET

        def listen():
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.bind((parent["address"], parent["port"]))
            sock.listen(64)
            return sock
        # Listening in the parents' namespace; each tunnel dials the origin from the pod's (the handler threads).
        self.sock = in_netns(f"/run/netns/{NODE_NETNS}", listen)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        with conn:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 16384:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target = (lines[0].split(" ") + ["", ""])[:2]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            authorized = self.authorization is None or headers.get("proxy-authorization") == self.authorization
            self.seen.append((target, authorized))
            if method != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            if not authorized:
                conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic realm=\"emulated\"\r\nContent-Length: 0\r\n\r\n")
                return
            if target != f"{self.allowed_host}:{ORIGIN_PORT}":
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            with socket.create_connection(("127.0.0.1", ORIGIN_PORT)) as up:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    up.sendall(rest)
                t = threading.Thread(target=_pipe, args=(up, conn), daemon=True)
                t.start()
                _pipe(conn, up)
                t.join(10)


def in_netns(path, fn):
    """fn() run with the calling thread in the network namespace at `path` (setns affects only that thread), then
    back in its own: the sockets it makes belong to that namespace. No thread is started: after the unshare of
    the PID namespace (start_container) the main thread can start none."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
        try:
            return fn()
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the pod's network namespace")
    finally:
        os.close(fd)
        os.close(own)


def _pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


# --- inside the namespaces ---------------------------------------------------------------------------------------

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REMOUNT, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 4096, 32, 16384, 1 << 18)
PR_SET_NO_NEW_PRIVS = 38


def sh(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise Fail(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def mount(src, dst, fstype=None, flags=0, data=None):
    if libc.mount(src.encode() if src else None, dst.encode(), fstype.encode() if fstype else None, flags,
                  data.encode() if data else None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {src} on {dst}: {os.strerror(e)}")


def kubelet_volume(dir_, files, mode, gid):
    """Write `files` into `dir_` as the kubelet's atomic writer does; return the timestamped directory."""
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.") + str(time.time_ns() % 10**9)
    ts = os.path.join(dir_, stamp)
    os.makedirs(ts)
    for key, content in files.items():
        path = os.path.join(ts, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(content))
        os.chmod(path, mode)
        if gid is not None:
            os.chown(path, 0, gid)
    os.chmod(ts, 0o755)
    tmp = os.path.join(dir_, "..data_tmp")
    os.symlink(stamp, tmp)
    os.rename(tmp, os.path.join(dir_, "..data"))
    for key in files:
        top = key.split("/")[0]
        link = os.path.join(dir_, top)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", top), link)
    return ts


def build_root(plan, base):
    root = os.path.join(base, "root")
    os.makedirs(root)
    mount("tmpfs", root, "tmpfs", 0, "mode=0755")
    for d in ("etc/ssl/certs", "proc", "dev", "tmp", "home/nonroot", "usr/local/bin", "sys"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    # The binary and the shared libraries it needs (distroless cc carries glibc and libgcc).
    shutil.copy2(plan["binary"], os.path.join(root, "usr/local/bin/egressd"))
    for lib in re.findall(r"(/\S+) \(0x", sh("ldd", plan["binary"])):
        real = os.path.realpath(lib)
        for path in {lib, real}:
            dst = os.path.join(root, path.lstrip("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(real, dst)
    for bundle in ("/etc/ssl/certs/ca-certificates.crt",):
        if os.path.exists(bundle):
            shutil.copy2(bundle, os.path.join(root, bundle.lstrip("/")))
    write = lambda path, text: open(os.path.join(root, path), "w").write(text)
    write("etc/passwd", IMAGE_PASSWD)
    write("etc/group", IMAGE_GROUP)
    hosts = ("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
             "fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
             f"{POD_IP4}\t{plan['pod']}\n{POD_IP6}\t{plan['pod']}\n")
    if plan["aliases"]:
        hosts += "\n# Entries added by HostAliases.\n" + "".join(
            f"{ip}\t" + "\t".join(names) + "\n" for ip, names in plan["aliases"])
    write("etc/hosts", hosts)
    write("etc/resolv.conf", plan["resolv"])
    write("etc/hostname", plan["pod"] + "\n")
    for dev in ("null", "zero", "random", "urandom"):
        open(os.path.join(root, "dev", dev), "w").close()
        mount(f"/dev/{dev}", os.path.join(root, "dev", dev), None, MS_BIND)
    # Volumes: a writable source the "kubelet" updates, bind-mounted read-only where the container sees it.
    fs_gid = plan["groups"][-1] if plan["groups"] else None
    for i, m in enumerate(plan["mounts"]):
        target = os.path.join(root, m["path"].lstrip("/"))
        src = os.path.join(base, f"volume-{i}")
        os.makedirs(src)
        mount("tmpfs", src, "tmpfs", 0, "mode=0755")
        m["source"] = src
        if m["kind"] == "emptyDir":
            os.makedirs(target, exist_ok=True)
            os.chmod(src, 0o777)
            mount(src, target, None, MS_BIND)
            continue
        kubelet_volume(src, m["files"], m["mode"], fs_gid)
        if m["sub_path"]:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "w").close()
            mount(os.path.join(src, m["sub_path"]), target, None, MS_BIND)
        else:
            os.makedirs(target, exist_ok=True)
            mount(src, target, None, MS_BIND)
        mount("none", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    if plan["read_only_root"]:
        mount("none", root, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        if os.access(os.path.join(root, "tmp"), os.W_OK) and _writable(os.path.join(root, "tmp")):
            raise Fail("the root filesystem is still writable")
    return root


def _writable(d):
    try:
        tempfile.TemporaryFile(dir=d).close()
        return True
    except OSError:
        return False


def start_container(plan, root, out):
    def child():
        # PID 1 of the new PID namespace: its own /proc, then the container's root and user.
        mount("proc", os.path.join(root, "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        os.chroot(root)
        os.chdir(plan["workdir"])
        os.setgroups(plan["groups"])
        os.setgid(plan["gid"])
        os.setuid(plan["uid"])
        if plan["no_new_privs"] and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "no_new_privs")

    if libc.unshare(CLONE_NEWPID) != 0:
        raise Fail(f"unshare(CLONE_NEWPID): {os.strerror(ctypes.get_errno())}")
    proc = subprocess.Popen(plan["argv"], env=plan["env"], stdout=out, stderr=subprocess.STDOUT,
                            preexec_fn=child, close_fds=True)
    return proc


def http(url, proxy=None, extra=(), source=None):
    """curl's status code and output (headers included); from `source`, an address of the node's namespace (an
    agent's pod), when given."""
    cmd = ["curl", "-sS", "-o", "/dev/null", "-D", "-", "--max-time", "5", "-k", "-w", "%{http_code}"]
    if source:
        cmd = ["ip", "netns", "exec", NODE_NETNS] + cmd + ["--interface", source]
    if proxy:
        cmd += ["--proxy", proxy, "--proxy-insecure"]
    r = subprocess.run(cmd + list(extra) + [url], capture_output=True, text=True)
    code = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "000"
    return code, r.stdout + r.stderr


def refusal(text):
    """The reason code of a 403 refusal in curl's output (headers included), or None."""
    if not re.search(r"^HTTP/1\.1 403 ", text, re.M):
        return None
    m = re.search(r"^X-Egressd-Reason: (\S+)", text, re.M | re.I)
    return m.group(1) if m else None


def wait_probe(name, probe, host, proc):
    if not probe:
        return
    url = f"{probe['scheme']}://{host}:{probe['port']}{probe['path']}"
    deadline = time.time() + min(probe["period"] * probe["failures"], 30)
    while True:
        if proc.poll() is not None:
            raise Fail(f"egressd exited with {proc.returncode} before the {name} probe passed")
        code, text = http(url, extra=["--connect-timeout", str(probe["timeout"])])
        if code.isdigit() and 200 <= int(code) < 400:
            log(f"{name} probe {url}: {code}")
            return
        if time.time() > deadline:
            raise Fail(f"{name} probe {url} failed: {code} {text.strip()}")
        time.sleep(0.2)


# --- workload identity (inside) ----------------------------------------------------------------------------------

def node_listener(address, port):
    """A listening socket at address:port in the node's network namespace."""
    def listen():
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(64)
        return sock
    return in_netns(f"/run/netns/{NODE_NETNS}", listen)


def api_story(api):
    """What the stand-in API server was asked, for a failure message."""
    seen = [f"{m} {t} -> {c}" for m, t, _, c in api.requests[-8:]]
    waiting = len(api.arrived) - len(api.requests)
    return ("\n  the stand-in API server answered: " + ("; ".join(seen) or "nothing")
            + (f" ({waiting} request(s) open)" if waiting > 0 else ""))


def wait_until(predicate, seconds, message):
    """predicate()'s first true value within `seconds`, else Fail(message, or message() when callable)."""
    deadline = time.time() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise Fail(message() if callable(message) else message)
        time.sleep(0.3)


def before_first_pod_list(plan, api, proc, proxies):
    """Until its first pod list (held by the stand-in), egressd passes its startup probe, asks for the pods with
    the mounted token and as its RBAC allows, is not ready, and lets no workload group's rule through."""
    wait_probe("startup", plan["probes"]["startup"], POD_IP4, proc)
    deadline = time.time() + 15
    while not any(verb in ("list", "watch") for _, _, verb in api.arrived):
        if proc.poll() is not None:
            raise Fail(f"egressd exited with {proc.returncode} before it asked the API server for pods")
        if time.time() > deadline:
            raise Fail("egressd did not ask the API server for pods within 15s of its startup probe" + api_story(api))
        time.sleep(0.1)
    refused = [r for r in api.requests if r[3] in (401, 403)]
    if refused:
        raise Fail("the stand-in API server refused egressd (401: not the mounted token; 403: not granted by the "
                   f"rendered RBAC): {refused}")
    probe = plan["probes"]["readiness"]
    if probe:
        url = f"{probe['scheme']}://{POD_IP4}:{probe['port']}{probe['path']}"
        for _ in range(5):
            code, body = http_text(url)
            if code != "503":
                raise Fail(f"readiness {url} answered {code} before egressd's first pod list: {body.strip()}"
                           + api_story(api))
            time.sleep(0.2)
        log(f"before the first pod list (held by the stand-in API server): readiness {url} 503 {body.strip()!r}")
    workload = plan["kube"]["workload"]
    if workload:
        code, text = http(f"https://{workload['host']}/", proxies[0], source=AGENT_IP4)
        reason = refusal(text)
        if reason:
            log(f"before the first pod list, from the group's pod {AGENT_IP4} to {workload['host']}: 403 {reason}")
        elif code == "000" and re.search(r"Connection refused|Couldn't connect", text):
            log(f"before the first pod list, the proxy port refuses connections ({AGENT_IP4})")
        else:
            raise Fail(f"before the first pod list, a request from {AGENT_IP4} to {workload['host']} (allowed only to "
                       f"group {workload['group']}) was not refused: HTTP {code} {text.strip()}")


def check_workload_identity(plan, api, decisions, proxies):
    """The group's pod is allowed, as a member of the group, through every proxy port over IPv4 and IPv6; a pod of
    another namespace, a finished pod of the group and a hostNetwork one are refused; a pod the watch adds is
    allowed and, once deleted, refused; with the API server gone, identity holds for stale_after, then the
    group's rules stop matching while the pod stays ready, and come back with the API server."""
    workload = plan["kube"]["workload"]
    group, host = workload["group"], workload["host"]
    agent = next(p for p in plan["kube"]["pods"] if p["status"]["podIP"] == AGENT_IP4)["metadata"]
    who = f"pod {agent['namespace']}/{agent['name']} of group {group}"

    def ask(src, proxy=None):
        before = len(decisions())
        code, text = http(f"https://{host}/", proxy or proxies[0], source=src)
        deadline = time.time() + 5
        while len(decisions()) <= before and time.time() < deadline:
            time.sleep(0.05)
        mine = [d for d in decisions()[before:] if d.get("host") == host]
        return code, text, (mine[-1] if mine else None)

    for proxy in proxies:
        src = AGENT_IP6 if "[" in proxy else AGENT_IP4
        code, text, d = ask(src, proxy)
        if (code != "200" or not d or group not in (d.get("client") or [])
                or (d.get("namespace"), d.get("pod")) != (agent["namespace"], agent["name"])):
            raise Fail(f"from {src} ({who}) to {host} through {proxy}: HTTP {code}, decision {json.dumps(d)}; "
                       f"expected 200 as a member of {group}, the decision naming the pod" + api_story(api))
    log(f"from {who} ({AGENT_IP4}, {AGENT_IP6}) to {host} through {len(proxies)} proxy port(s): 200, "
        f"client {d.get('client')}, namespace {d.get('namespace')}, pod {d.get('pod')}")
    owners = [p for p in plan["kube"]["pods"]
              if p["status"]["phase"] == "Running" and not p["spec"].get("hostNetwork")]
    wait_until(lambda: metric(plan, "egressd_workload_pods") == len(owners)
               and metric(plan, "egressd_workload_identity_up") == 1, 5,
               lambda: f"/metrics: egressd_workload_pods {metric(plan, 'egressd_workload_pods')} and "
                       f"egressd_workload_identity_up {metric(plan, 'egressd_workload_identity_up')}, expected "
                       f"{len(owners)} (the listed pods that own their address) and 1")
    log(f"/metrics: egressd_workload_pods {len(owners)} (of {len(plan['kube']['pods'])} listed: finished and "
        "hostNetwork pods own no address), egressd_workload_identity_up 1")
    for ip, what in ((OTHER_IP4, "a running pod of namespace emulation-other"),
                     (SUCCEEDED_IP4, f"a Succeeded pod of group {group}, whose address another pod may have now"),
                     (HOST_NETWORK_IP4, f"a hostNetwork pod of group {group}, whose address is the node's")):
        code, text, d = ask(ip)
        reason = refusal(text)
        if not reason:
            raise Fail(f"from {ip} ({what}) to {host}: expected 403, got HTTP {code}, decision {json.dumps(d)}")
        log(f"from {ip} ({what}): 403 {reason}")

    added = workload["added"]
    meta = added["metadata"]
    api.add(added)
    wait_until(lambda: ask(ADDED_IP4)[0] == "200", 10,
               lambda: f"the pod {meta['namespace']}/{meta['name']} the watch added at {ADDED_IP4} was not allowed "
                       "within 10s" + api_story(api))
    api.delete(meta["namespace"], meta["name"])
    wait_until(lambda: refusal(ask(ADDED_IP4)[1]), 10,
               lambda: f"the pod the watch deleted ({ADDED_IP4}) was still allowed 10s later" + api_story(api))
    log(f"watch: pod {meta['namespace']}/{meta['name']} ADDED at {ADDED_IP4}: allowed; DELETED: refused")

    api.stop()
    stopped = time.time()
    code, text, d = ask(AGENT_IP4)
    if code != "200" and time.time() - stopped < STALE_AFTER - 1:
        raise Fail(f"right after the API server went away (stale_after {STALE_AFTER}s), {who} was refused: HTTP "
                   f"{code}, decision {json.dumps(d)}")
    last = [None]

    def stale():
        last[0] = ask(AGENT_IP4)
        return refusal(last[0][1])
    reason = wait_until(stale, STALE_AFTER + 15,
                        f"{STALE_AFTER + 15}s after the API server went away (stale_after {STALE_AFTER}s), {who} is "
                        "still allowed: identity does not fail closed")
    elapsed = time.time() - stopped
    ready_probe = plan["probes"]["readiness"]
    code, body = http_text(f"{ready_probe['scheme']}://{POD_IP4}:{ready_probe['port']}{ready_probe['path']}")
    if code != "200":
        raise Fail(f"with the API server unreachable, readiness answered {code} (it must stay ready): {body.strip()}")
    log(f"API server unreachable: {who} still allowed at first, refused after {elapsed:.1f}s (stale_after "
        f"{STALE_AFTER}s): 403 {reason}; readiness stays 200 {body.strip()!r}")
    wait_until(lambda: metric(plan, "egressd_workload_identity_up") == 0
               and (metric(plan, "egressd_workload_identity_lost_total") or 0) >= 1, 5,
               lambda: "/metrics does not say that workload identity is lost (egressd_workload_identity_up "
                       f"{metric(plan, 'egressd_workload_identity_up')}, egressd_workload_identity_lost_total "
                       f"{metric(plan, 'egressd_workload_identity_lost_total')})")
    log("/metrics: egressd_workload_identity_up 0, egressd_workload_identity_lost_total "
        f"{metric(plan, 'egressd_workload_identity_lost_total'):g}")
    api.start(node_listener)
    restarted = time.time()
    wait_until(lambda: ask(AGENT_IP4)[0] == "200", 30,
               lambda: f"{who} was still refused 30s after the API server came back" + api_story(api))
    wait_until(lambda: metric(plan, "egressd_workload_identity_up") == 1, 5,
               "egressd_workload_identity_up is not 1 again after the API server came back")
    log(f"API server back: {who} allowed again after {time.time() - restarted:.1f}s, "
        "egressd_workload_identity_up 1")


def metric(plan, name):
    """The sum of the series of metric `name` on the pod's /metrics, or None if it has none."""
    _, text = http_text(f"http://{POD_IP4}:{plan['ports']['admin']}/metrics")
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{")]
    return sum(values) if values else None


def inner(plan_path):
    plan = json.load(open(plan_path))
    base = os.path.dirname(plan_path)
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    sh("ip", "link", "set", "lo", "up")
    # A veth pair, the pod's interface. Without parents or an API server its other end stays in the same
    # namespace, with nothing behind it. With them, the other end is in a network namespace of its own (the
    # node's), where they listen, and only their addresses are routed there; the agents' pods are there too.
    kube = plan.get("kube")
    node = bool(plan["parents"] or kube)
    peer = ["peer", "name", "node0"]
    if node:
        os.makedirs("/run/netns", exist_ok=True)
        mount("tmpfs", "/run/netns", "tmpfs", 0, "mode=0755")
        sh("ip", "netns", "add", NODE_NETNS)
        peer += ["netns", NODE_NETNS]
    sh("ip", "link", "add", "eth0", "type", "veth", *peer)
    sh("ip", "addr", "add", f"{POD_IP4}/24", "dev", "eth0")
    sh("ip", "-6", "addr", "add", f"{POD_IP6}/64", "dev", "eth0", "nodad")
    sh("ip", "link", "set", "eth0", "up")
    if node:
        ns = ["ip", "-n", NODE_NETNS]
        sh(*ns, "link", "set", "lo", "up")
        sh(*ns, "addr", "add", f"{NODE_IP4}/24", "dev", "node0")
        sh(*ns, "-6", "addr", "add", f"{NODE_IP6}/64", "dev", "node0", "nodad")
        sh(*ns, "link", "set", "node0", "up")
        routed = [parent["address"] for parent in plan["parents"]] + ([KUBERNETES_SVC] if kube else [])
        for address in routed:
            v6 = ":" in address
            sh(*ns, "addr", "add", address, "dev", "lo")
            sh("ip", "-6" if v6 else "-4", "route", "add", address, "via", NODE_IP6 if v6 else NODE_IP4,
               "dev", "eth0")
        if kube:
            # The agents' pods: on the pod network, next to the pod (the emulation's client binds to them).
            for address in (AGENT_IP4, OTHER_IP4, SUCCEEDED_IP4, HOST_NETWORK_IP4, ADDED_IP4):
                sh(*ns, "addr", "add", f"{address}/32", "dev", "node0")
            sh(*ns, "-6", "addr", "add", f"{AGENT_IP6}/128", "dev", "node0", "nodad")
    else:
        sh("ip", "link", "set", "node0", "up")
    origin = None
    if plan["allowed_host"]:
        host = plan["allowed_host"]
        key, crt = os.path.join(base, "origin.key"), os.path.join(base, "origin.crt")
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-keyout", key, "-out", crt, "-days", "2", "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}")
        origin = subprocess.Popen(["openssl", "s_server", "-quiet", "-www", "-accept", f"127.0.0.1:{ORIGIN_PORT}",
                                   "-cert", crt, "-key", key], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", ORIGIN_PORT)) == 0:
                    break
            time.sleep(0.05)
    # The parent proxies, at the addresses the container's /etc/hosts (hostAliases) or their url name.
    fakes = {p["name"]: FakeParent(p, plan["allowed_host"]) for p in plan["parents"]}
    # The API server, where KUBERNETES_SERVICE_HOST/PORT point; its lists held until egressd has been seen
    # waiting for them.
    api = None
    if kube:
        api = EmulatedApiServer(KUBERNETES_SVC, 443, kube["cert"], kube["key"], kube["token"], kube["account"],
                                [tuple(r) for r in kube["rules"]], kube["pods"])
        api.start(node_listener)
        if not kube["groups"]:
            api.release()
    root = build_root(plan, base)
    log_path = os.path.join(base, "egressd.log")
    out = open(log_path, "w")
    proc = start_container(plan, root, out)

    def logs():
        return open(log_path).read()

    def decisions():
        return [json.loads(line) for line in logs().splitlines()
                if line.startswith("{") and '"event":"decision"' in line]

    proxies = [f"http://{ip}:{plan['ports']['proxy']}" for ip in (POD_IP4, f"[{POD_IP6}]")]
    if "proxy-tls" in plan["ports"]:
        proxies.append(f"https://{POD_IP4}:{plan['ports']['proxy-tls']}")

    def source(proxy):
        """Where the allowed requests come from: the pod's own namespace, or the workload group's pod."""
        if not plan["allowed_from"]:
            return None
        return AGENT_IP6 if "[" in proxy else AGENT_IP4

    try:
        if kube and kube["groups"]:
            before_first_pod_list(plan, api, proc, proxies)
            api.release()
        for ip in (POD_IP4, f"[{POD_IP6}]"):
            for name in ("startup", "readiness", "liveness"):
                wait_probe(name, plan["probes"][name], ip, proc)
        for proxy in proxies:
            code, text = http(REFUSED_URL, proxy)
            reason = refusal(text)
            if not reason:
                raise Fail(f"a request for the metadata address through {proxy}: expected 403, got {text.strip()}")
            log(f"refused request for {REFUSED_URL} through {proxy}: 403 {reason}")
            if plan["allowed_host"]:
                code, text = http(f"https://{plan['allowed_host']}/", proxy, source=source(proxy))
                if code != "200":
                    raise Fail(f"an allowed request to {plan['allowed_host']} through {proxy}"
                               + (f" from {source(proxy)}" if source(proxy) else "") + f": {text.strip()}"
                               + (api_story(api) if api else ""))
                log(f"allowed request to {plan['allowed_host']} through {proxy}"
                    + (f" from {source(proxy)}" if source(proxy) else "") + ": 200")
        # A decision line may be written just after its answer: give the log a moment.
        wait_until(lambda: (lambda ds: any(d["decision"] == "deny" for d in ds) and (
            not plan["allowed_host"] or any(d["decision"] == "allow" for d in ds)))(decisions()), 5,
            "the decisions are not in the log")
        if plan["route"]:
            check_parent_route(plan, fakes, decisions, proxies, logs)
        if kube and kube["workload"]:
            check_workload_identity(plan, api, decisions, proxies)


        # A ConfigMap update, as the kubelet makes it: new timestamped directory, `..data` swapped.
        cm = plan["config_mount"]
        if cm and plan["allowed_host"]:
            m = next(x for x in plan["mounts"] if x["path"] == cm["path"])
            cfg_key = next(k for k in m["files"] if k.endswith(".yaml"))
            cfg = yaml.safe_load(base64.b64decode(m["files"][cfg_key])) or {}
            cfg["deny"] = (cfg.get("deny") or []) + [{"name": "emulated-update", "hosts": [plan["allowed_host"]]}]
            files = dict(m["files"])
            files[cfg_key] = base64.b64encode(yaml.safe_dump(cfg).encode()).decode()
            reloads = logs().count("configuration reloaded")
            old = os.path.realpath(os.path.join(m["source"], "..data"))
            kubelet_volume(m["source"], files, m["mode"], plan["groups"][-1] if plan["groups"] else None)
            shutil.rmtree(old)
            deadline = time.time() + 10
            while logs().count("configuration reloaded") <= reloads:
                if time.time() > deadline:
                    raise Fail("the ConfigMap update (..data swapped) was not reloaded within 10s")
                time.sleep(0.1)
            before = len(decisions())
            code, text = http(f"https://{plan['allowed_host']}/", proxies[0], source=source(proxies[0]))
            deadline = time.time() + 5
            while len(decisions()) <= before and time.time() < deadline:
                time.sleep(0.05)
            last = decisions()[-1]
            if last.get("rule") != "emulated-update" or last.get("decision") not in ("deny", "would_deny"):
                raise Fail(f"after the ConfigMap update {plan['allowed_host']} is not judged by the new deny rule: "
                           f"{json.dumps(last)}")
            log(f"ConfigMap update by symlink swap: reloaded, the new deny rule judges {plan['allowed_host']} "
                f"({last['decision']} {last['reason']}, HTTP {code if code != '000' else text.split()[1]})")

        # Stop: preStop sleep (the pod still serves), then SIGTERM; exit 0 within the grace period.
        started = time.time()
        while time.time() - started < plan["pre_stop_sleep"]:
            _, text = http(REFUSED_URL, proxies[0])
            if not refusal(text):
                raise Fail(f"during preStop the proxy did not answer: {text.strip()}")
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        budget = plan["grace"] - plan["pre_stop_sleep"]
        try:
            rc = proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            raise Fail(f"egressd did not exit within {budget}s of SIGTERM (the kubelet would SIGKILL it)")
        if rc != 0:
            raise Fail(f"egressd exited {rc} after SIGTERM")
        log(f"preStop sleep {plan['pre_stop_sleep']}s served, SIGTERM: exit 0 after "
            f"{time.time() - started - plan['pre_stop_sleep']:.1f}s (grace {budget}s)")
        if kube and not kube["groups"]:
            if api.arrived:
                raise Fail(f"no client group uses workload identity, yet egressd asked the API server: {api.arrived}")
            log("no client group uses workload identity: egressd asked the API server nothing")
        elif kube:
            asked = sorted({f"{m} {t.split('?')[0]} ({v})" for m, t, v in api.arrived})
            log(f"egressd asked the API server: {', '.join(asked)}")
    except Fail:
        out.flush()
        sys.stderr.write(logs()[-4000:])
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
        if origin:
            origin.kill()
        if api:
            api.stop()


def check_parent_route(plan, fakes, decisions, proxies, logs):
    """The allowed requests went through the route's first parent, with the credentials of the file the pod
    mounts, and egressd counted them; then the Secret is updated by the kubelet's symlink swap, and the next
    request carries the new credentials."""
    first = plan["route"][0]
    fake = fakes[first]
    target = f"{plan['allowed_host']}:{ORIGIN_PORT}"
    allowed = [d for d in decisions() if d.get("host") == plan["allowed_host"] and d["decision"] == "allow"]
    wrong = [d for d in allowed if d.get("via") != first]
    if not allowed or wrong:
        raise Fail(f"the allowed requests did not go through parent {first}: {json.dumps(wrong or allowed)}")
    if not fake.seen or not all(ok for _, ok in fake.seen) or {s for s, _ in fake.seen} != {target}:
        raise Fail(f"parent {first} saw {fake.seen}, expected authenticated CONNECTs to {target}")
    _, metrics = http_text(f"http://{POD_IP4}:{plan['ports']['admin']}/metrics")
    counted = 0.0
    for line in metrics.splitlines():
        if line.startswith("egressd_parent_attempts_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if labels.get("parent") == first and labels.get("result") == "200":
                counted += float(line.rsplit(" ", 1)[1])
    if counted < len(fake.seen):
        raise Fail(f"/metrics counts {counted:g} of the {len(fake.seen)} CONNECTs parent {first} answered with 200")
    how = "with the credentials of the mounted file" if fake.authorization else "without credentials"
    log(f"through parent {first}: {len(fake.seen)} CONNECT {target} {how}, "
        f"egressd_parent_attempts_total{{parent=\"{first}\",result=\"200\"}} {counted:g}")
    parent = next(p for p in plan["parents"] if p["name"] == first)
    if not parent["source"]:
        return
    # The Secret rotated in place: the kubelet writes a new timestamped directory and swaps `..data`.
    m = next(x for x in plan["mounts"] if x["path"] == parent["source"]["path"])
    rotated = b"egressd:rotated-by-the-emulation\n"
    files = dict(m["files"])
    files[parent["source"]["key"]] = base64.b64encode(rotated).decode()
    reloads = logs().count("configuration reloaded")
    old = os.path.realpath(os.path.join(m["source"], "..data"))
    kubelet_volume(m["source"], files, m["mode"], plan["groups"][-1] if plan["groups"] else None)
    shutil.rmtree(old)
    m["files"] = files
    fake.authorization = basic(rotated)
    deadline = time.time() + 10
    while logs().count("configuration reloaded") <= reloads:
        if time.time() > deadline:
            raise Fail(f"the update of {parent['source']['object']} (..data swapped) was not reloaded within 10s")
        time.sleep(0.1)
    seen = len(fake.seen)
    code, text = http(f"https://{plan['allowed_host']}/", proxies[0])
    if code != "200" or len(fake.seen) <= seen or not all(ok for _, ok in fake.seen[seen:]):
        raise Fail(f"after the credentials update: HTTP {code}, parent {first} saw {fake.seen[seen:]} "
                   f"(expected the new credentials) {text.strip()}")
    log(f"{parent['source']['object']} updated by symlink swap: reloaded, parent {first} got the new credentials (200)")


def http_text(url):
    r = subprocess.run(["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}", url], capture_output=True, text=True)
    body, _, code = r.stdout.rpartition("\n")
    return code, body


# --- outside ---------------------------------------------------------------------------------------------------

def host_view(plan, cfg, work):
    """`cfg` with every path inside a ConfigMap, Secret or projected mount pointed at a copy of that mount in
    `work` (`egressd check` on this host reads the files the config names: the parents' credentials)."""
    roots = []
    for i, m in enumerate(plan["mounts"]):
        if m["kind"] == "emptyDir" or m["sub_path"]:
            continue
        copy = os.path.join(work, f"host-volume-{i}")
        for key, content in m["files"].items():
            os.makedirs(os.path.dirname(os.path.join(copy, key)), exist_ok=True)
            with open(os.path.join(copy, key), "wb") as f:
                f.write(base64.b64decode(content))
        roots.append((m["path"].rstrip("/") + "/", copy + "/"))

    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        for root, copy in roots:
            if isinstance(v, str) and v.startswith(root):
                return copy + v[len(root):]
        return v
    return walk(cfg)


def candidate_hosts(binary, cfg):
    """The host names on 443 of the config's vendor profiles (`egressd vendors show`) and allow rules."""
    candidates = []
    for v in cfg.get("vendors") or []:
        name = v if isinstance(v, str) else v["name"]
        shown = subprocess.run([binary, "vendors", "show", name], capture_output=True, text=True).stdout
        candidates += re.findall(r"^  ([a-z0-9.-]+\.[a-z]+):443$", shown, re.M)
    for rule in cfg.get("allow") or []:
        candidates += [h for h in rule.get("hosts", []) if re.fullmatch(r"[a-z0-9.-]+\.[a-z]+", h)]
    return candidates


def allowed_host(binary, plan, work):
    """A host the pod's configuration allows on 443, to map to the emulation's origin, and its route (the parent
    names `egressd check` prints as via=, [] for direct); (None, []) if none."""
    m = plan["config_mount"]
    if not m:
        return None, []
    key = next((k for k in m["files"] if k.endswith(".yaml")), None)
    if not key:
        return None, []
    cfg = yaml.safe_load(base64.b64decode(m["files"][key])) or {}
    text = yaml.safe_dump(host_view(plan, cfg, work))
    candidates = candidate_hosts(binary, cfg)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESSD_")}
        for host in candidates:
            r = subprocess.run([binary, "check", "--config", f.name, f"https://{host}/"], capture_output=True,
                               env=env, text=True)
            if r.returncode == 0:
                via = re.search(r"\tvia=(\S+)$", r.stdout.strip())
                route = via.group(1).split(",") if via and via.group(1) != "direct" else []
                return host, route
    return None, []


# --- workload identity (outside) ---------------------------------------------------------------------------------

def pod_config(plan):
    """The pod's egressd config (the first .yaml key of its ConfigMap mount), or {}."""
    m = plan["config_mount"]
    key = next((k for k in (m or {}).get("files", {}) if k.endswith(".yaml")), None)
    return (yaml.safe_load(base64.b64decode(m["files"][key])) or {}) if key else {}


def emulated_pod(name, namespace, account, labels, ip4, ip6=None, phase="Running", host_network=False):
    """A pod as the API server lists it (no kind or apiVersion: list items have none)."""
    ips = [ip4] + ([ip6] if ip6 else [])
    spec = {"serviceAccountName": account, "serviceAccount": account, "nodeName": NODE_NAME,
            "containers": [{"name": "agent", "image": "registry.example.com/agent:1"}]}
    if host_network:
        spec["hostNetwork"] = True
    return {"metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{name}")),
                         "labels": dict(labels), "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec,
            "status": {"phase": phase, "podIP": ip4, "podIPs": [{"ip": ip} for ip in ips], "hostIP": "10.0.0.1",
                       "startTime": "2026-01-01T00:00:00Z"}}


def member_of(group, stem, ip4, ip6=None, **kw):
    """A pod that is in `group` by its namespaces, service_accounts and pod_labels (every field given)."""
    namespaces = group.get("namespaces") or []
    accounts = [a.partition("/")[::2] for a in group.get("service_accounts") or []]
    if accounts:
        ns, account = next(((n, a) for n, a in accounts if not namespaces or n in namespaces), (None, None))
        if ns is None:
            raise Fail(f"client group {group['name']}: none of its service_accounts is in its namespaces, so no pod "
                       "can be in it")
    else:
        ns, account = (namespaces[0] if namespaces else "emulated-agents"), "default"
    return emulated_pod(f"{stem}-7c9d8b6f5-q4x2z", ns, account, group.get("pod_labels") or {}, ip4, ip6, **kw)


def egressd_check(binary, cfg_path, url, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESSD_")}
    return subprocess.run([binary, "check", "--config", cfg_path, *args, url], capture_output=True, env=env,
                          text=True).returncode


def workload_host(binary, plan, cfg, groups, work):
    """(group, host): the first group by namespaces, service_accounts or pod_labels with a host (on 443) that
    `egressd check` allows to a member of that group (--client) and refuses to a client in no group and at each
    of the emulation's addresses (--from): so an allowed request from the agent's address can only be its
    workload identity. (None, None) if there is none."""
    candidates = candidate_hosts(binary, cfg)
    path = os.path.join(work, "workload-check.yaml")
    with open(path, "w") as f:
        f.write(yaml.safe_dump(host_view(plan, cfg, work)))
    addresses = [AGENT_IP4, AGENT_IP6, OTHER_IP4, SUCCEEDED_IP4, HOST_NETWORK_IP4, ADDED_IP4]
    for group in groups:
        for host in candidates:
            url = f"https://{host}/"
            if egressd_check(binary, path, url, "--client", group["name"]) != 0 or egressd_check(binary, path, url) == 0:
                continue
            if any(egressd_check(binary, path, url, "--from", ip) == 0 for ip in addresses):
                continue
            return group, host
    return None, None


def kube_plan(plan, binary, objs, work):
    """What the kubelet and the API server give a pod that mounts its service account token: the token directory
    (token, ca.crt, namespace) at SA_DIR and, for the stand-in API server, its certificate, the token, the RBAC
    rules bound to the ServiceAccount and the pods it lists. None without the token."""
    sa = plan["service_account"]
    cfg = pod_config(plan)
    groups = [g for g in cfg.get("clients") or [] if any(g.get(f) for f in WORKLOAD_FIELDS)]
    names = ", ".join(g["name"] for g in groups)
    if groups and not sa["token"]:
        raise Fail(f"client groups {names} use namespaces, service_accounts or pod_labels, but the pod does not mount "
                   "its service account token (automountServiceAccountToken): egressd could not list pods")
    if not sa["token"]:
        return None

    def run(cmd):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise Fail(f"{' '.join(cmd)}: {r.stderr.strip()}")
    ca, cert, key = make_certificates(work, KUBERNETES_SVC, run)
    token = "emulated." + secrets.token_urlsafe(32)
    files = {"token": token.encode(), "ca.crt": open(ca, "rb").read(), "namespace": sa["namespace"].encode()}
    plan["mounts"].append({"kind": "projected", "object": "kube-api-access", "path": SA_DIR, "sub_path": None,
                           "files": {k: base64.b64encode(v).decode() for k, v in files.items()},
                           "origins": {k: "the kubelet (service account token)" for k in files},
                           "mode": 0o644, "volume": "kube-api-access-emulated"})
    rules = [(rule, cluster_wide) for _, rule, cluster_wide in bound_rules(objs.docs, sa["namespace"], sa["name"])
             if rule]
    kube = {"token": token, "cert": cert, "key": key, "rules": rules, "groups": [g["name"] for g in groups],
            "account": f"system:serviceaccount:{sa['namespace']}:{sa['name']}", "pods": [], "workload": None}
    plan["notes"].append(f"automountServiceAccountToken: the token of ServiceAccount {sa['namespace']}/{sa['name']}, "
                         f"the cluster CA and the namespace at {SA_DIR}; {len(rules)} RBAC rule(s) bound to it")
    if not groups:
        return kube
    group, host = workload_host(binary, plan, cfg, groups, work)
    other = emulated_pod("other-5b7f9c8d4-m2n8k", "emulation-other", "default", {"app": "other"}, OTHER_IP4)
    pods = [other]
    if group:
        pods += [member_of(group, "agent", AGENT_IP4, AGENT_IP6),
                 member_of(group, "finished", SUCCEEDED_IP4, phase="Succeeded"),
                 member_of(group, "on-host", HOST_NETWORK_IP4, host_network=True)]
        kube["workload"] = {"group": group["name"], "host": host,
                            "added": member_of(group, "added", ADDED_IP4)}
    kube["pods"] = pods
    return kube


def main(argv):
    if len(argv) >= 3 and argv[1] == "--inner":
        try:
            inner(argv[2])
        except Fail as e:
            print(f"pod emulation: {e}", file=sys.stderr)
            return 1
        return 0
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    rendered, binary = argv[1], argv[2]
    dockerfile = argv[3] if len(argv) > 3 else "Dockerfile"
    objs = Objects(yaml.safe_load_all(open(rendered)))
    image = image_from_dockerfile(dockerfile)
    failed = 0
    for deploy in objs.of_kind("Deployment"):
        spec = deploy["spec"]["template"]["spec"]
        if not any("egressd" in c.get("image", "") for c in spec["containers"]):
            continue
        with tempfile.TemporaryDirectory() as work:
            try:
                plan = plan_pod(objs, deploy, image, binary, work)
            except Fail as e:
                print(f"{os.path.basename(rendered)}: {deploy['metadata']['name']}: {e}", file=sys.stderr)
                failed += 1
                continue
            try:
                plan["parents"] = emulated_parents(plan, objs, deploy)
            except Fail as e:
                print(f"{os.path.basename(rendered)}: {deploy['metadata']['name']}: {e}", file=sys.stderr)
                failed += 1
                continue
            plan["allowed_host"], plan["route"] = allowed_host(binary, plan, work)
            try:
                plan["kube"] = kube_plan(plan, binary, objs, work)
            except Fail as e:
                print(f"{os.path.basename(rendered)}: {deploy['metadata']['name']}: {e}", file=sys.stderr)
                failed += 1
                continue
            workload = (plan["kube"] or {}).get("workload")
            # The allowed requests come from the pod's own namespace, or, where only a workload group is allowed
            # a host, from that group's pod (AGENT_IP4/6) in the node's.
            plan["allowed_from"] = None
            if workload and not plan["allowed_host"]:
                plan["allowed_host"], plan["allowed_from"] = workload["host"], "agent"
            origin_names = sorted({h for h in (plan["allowed_host"], (workload or {}).get("host")) if h})
            if origin_names:
                plan["aliases"].append(("127.0.0.1", origin_names))
                plan["env"]["EGRESSD_DESTINATIONS__ALLOW_CIDRS"] = "127.0.0.0/8"
            if plan["kube"] and plan["kube"]["groups"]:
                plan["env"]["EGRESSD_KUBERNETES__STALE_AFTER"] = f"{STALE_AFTER}s"
            for parent in plan["parents"]:
                if parent["alias"]:
                    plan["aliases"].append((parent["address"], [parent["alias"]]))
            print(f"{os.path.basename(rendered)}: pod {plan['name']} as UID {plan['uid']}, "
                  f"argv {' '.join(plan['argv'][1:])}", flush=True)
            for n in plan["notes"]:
                log(n)
            if origin_names:
                log(f"added by the emulation: hostAliases 127.0.0.1 {' '.join(origin_names)} (the origin) and "
                    "EGRESSD_DESTINATIONS__ALLOW_CIDRS=127.0.0.0/8")
            else:
                log("no rule of this configuration allows a host on 443: the allowed request is skipped")
            kube = plan["kube"]
            if kube:
                log(f"added by the emulation: a stand-in API server at https://{KUBERNETES_SVC}:443 (the kubelet's "
                    f"KUBERNETES_SERVICE_HOST/PORT) behind the pod's interface, certificate for {KUBERNETES_SVC} from "
                    f"the mounted ca.crt, the token required, RBAC as rendered for {kube['account']}")
            if kube and kube["groups"]:
                log(f"added by the emulation: EGRESSD_KUBERNETES__STALE_AFTER={STALE_AFTER}s (client groups "
                    f"{', '.join(kube['groups'])} use workload identity)")
                if workload:
                    log(f"workload identity: {workload['host']} is allowed to group {workload['group']} only; the "
                        f"stand-in lists its pod at {AGENT_IP4} and {AGENT_IP6}, a pod of another namespace at "
                        f"{OTHER_IP4}, a Succeeded pod of the group at {SUCCEEDED_IP4} and a hostNetwork one at "
                        f"{HOST_NETWORK_IP4}; the watch adds one at {ADDED_IP4}")
                else:
                    log("workload identity: no host is allowed only to a workload group; only the pod list and "
                        "readiness are checked")
            elif kube:
                log("no client group uses workload identity: egressd must not ask the API server anything")
            if plan["allowed_from"]:
                log(f"the allowed requests come from the pod of group {workload['group']} ({AGENT_IP4}, {AGENT_IP6})")
            for parent in plan["parents"]:
                alias = f" (hostAliases {parent['address']} {parent['alias']})" if parent["alias"] else ""
                log(f"added by the emulation: parent {parent['name']}, a CONNECT proxy at "
                    f"{parent['address']}:{parent['port']}{alias}, expecting "
                    + ("the pod's credentials" if parent["authorization"] else "no credentials"))
            if plan["route"]:
                log(f"route of {plan['allowed_host']} (egressd check): via {','.join(plan['route'])}")
            path = os.path.join(work, "plan.json")
            json.dump(plan, open(path, "w"))
            r = subprocess.run(["unshare", "--mount", "--net", "--fork", sys.executable, os.path.abspath(__file__),
                                "--inner", path])
            if r.returncode != 0:
                print(f"{os.path.basename(rendered)}: pod {plan['name']} failed", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
