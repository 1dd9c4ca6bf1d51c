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
  that namespace: nothing leaves it; with parent proxies, the peer is in their namespace and only their
  addresses are routed to it).

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
"""

import base64
import ctypes
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import yaml

POD_IP4 = "10.244.0.7"
POD_IP6 = "fd00:10:244::7"
# The other end of the pod's veth, through which the parent proxies' addresses are routed (when there are any).
NODE_IP4 = "10.244.0.1"
NODE_IP6 = "fd00:10:244::1"
PARENTS_NETNS = "egressd-parents"
KUBERNETES_SVC = "10.96.0.1"
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
    return {
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
        self.sock = in_netns(f"/run/netns/{PARENTS_NETNS}", listen)
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
    """fn() run in a thread that joined the network namespace at `path` (setns affects only that thread): the
    sockets it makes belong to that namespace."""
    result = {}

    def run():
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {path}")
            result["value"] = fn()
        except Exception as e:  # re-raised in the caller's thread
            result["error"] = e
        finally:
            os.close(fd)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


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


def http(url, proxy=None, extra=()):
    cmd = ["curl", "-sS", "-o", "/dev/null", "-D", "-", "--max-time", "5", "-k", "-w", "%{http_code}"]
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


def inner(plan_path):
    plan = json.load(open(plan_path))
    base = os.path.dirname(plan_path)
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    sh("ip", "link", "set", "lo", "up")
    # A veth pair, the pod's interface. Without parents its other end stays in the same namespace, with nothing
    # behind it. With parents, the other end is in a network namespace of their own, where they listen, and
    # only their addresses are routed there.
    peer = ["peer", "name", "node0"]
    if plan["parents"]:
        os.makedirs("/run/netns", exist_ok=True)
        mount("tmpfs", "/run/netns", "tmpfs", 0, "mode=0755")
        sh("ip", "netns", "add", PARENTS_NETNS)
        peer += ["netns", PARENTS_NETNS]
    sh("ip", "link", "add", "eth0", "type", "veth", *peer)
    sh("ip", "addr", "add", f"{POD_IP4}/24", "dev", "eth0")
    sh("ip", "-6", "addr", "add", f"{POD_IP6}/64", "dev", "eth0", "nodad")
    sh("ip", "link", "set", "eth0", "up")
    if plan["parents"]:
        ns = ["ip", "-n", PARENTS_NETNS]
        sh(*ns, "link", "set", "lo", "up")
        sh(*ns, "addr", "add", f"{NODE_IP4}/24", "dev", "node0")
        sh(*ns, "-6", "addr", "add", f"{NODE_IP6}/64", "dev", "node0", "nodad")
        sh(*ns, "link", "set", "node0", "up")
        for parent in plan["parents"]:
            v6 = ":" in parent["address"]
            sh(*ns, "addr", "add", parent["address"], "dev", "lo")
            sh("ip", "-6" if v6 else "-4", "route", "add", parent["address"], "via", NODE_IP6 if v6 else NODE_IP4,
               "dev", "eth0")
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
    root = build_root(plan, base)
    log_path = os.path.join(base, "egressd.log")
    out = open(log_path, "w")
    proc = start_container(plan, root, out)

    def logs():
        return open(log_path).read()

    def decisions():
        return [json.loads(line) for line in logs().splitlines()
                if line.startswith("{") and '"event":"decision"' in line]

    try:
        for ip in (POD_IP4, f"[{POD_IP6}]"):
            for name in ("startup", "readiness", "liveness"):
                wait_probe(name, plan["probes"][name], ip, proc)
        proxies = [f"http://{ip}:{plan['ports']['proxy']}" for ip in (POD_IP4, f"[{POD_IP6}]")]
        if "proxy-tls" in plan["ports"]:
            proxies.append(f"https://{POD_IP4}:{plan['ports']['proxy-tls']}")
        for proxy in proxies:
            code, text = http(REFUSED_URL, proxy)
            reason = refusal(text)
            if not reason:
                raise Fail(f"a request for the metadata address through {proxy}: expected 403, got {text.strip()}")
            log(f"refused request for {REFUSED_URL} through {proxy}: 403 {reason}")
            if plan["allowed_host"]:
                code, text = http(f"https://{plan['allowed_host']}/", proxy)
                if code != "200":
                    raise Fail(f"an allowed request to {plan['allowed_host']} through {proxy}: {text.strip()}")
                log(f"allowed request to {plan['allowed_host']} through {proxy}: 200")
        ds = decisions()
        if not any(d["decision"] == "deny" for d in ds) or (
                plan["allowed_host"] and not any(d["decision"] == "allow" for d in ds)):
            raise Fail("the decisions are not in the log")
        if plan["route"]:
            check_parent_route(plan, fakes, decisions, proxies, logs)


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
            code, text = http(f"https://{plan['allowed_host']}/", proxies[0])
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
    except Fail:
        out.flush()
        sys.stderr.write(logs()[-4000:])
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
        if origin:
            origin.kill()


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
    candidates = []
    for v in cfg.get("vendors") or []:
        name = v if isinstance(v, str) else v["name"]
        shown = subprocess.run([binary, "vendors", "show", name], capture_output=True, text=True).stdout
        candidates += re.findall(r"^  ([a-z0-9.-]+\.[a-z]+):443$", shown, re.M)
    for rule in cfg.get("allow") or []:
        candidates += [h for h in rule.get("hosts", []) if re.fullmatch(r"[a-z0-9.-]+\.[a-z]+", h)]
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
            if plan["allowed_host"]:
                plan["aliases"].append(("127.0.0.1", [plan["allowed_host"]]))
                plan["env"]["EGRESSD_DESTINATIONS__ALLOW_CIDRS"] = "127.0.0.0/8"
            for parent in plan["parents"]:
                if parent["alias"]:
                    plan["aliases"].append((parent["address"], [parent["alias"]]))
            print(f"{os.path.basename(rendered)}: pod {plan['name']} as UID {plan['uid']}, "
                  f"argv {' '.join(plan['argv'][1:])}", flush=True)
            for n in plan["notes"]:
                log(n)
            if plan["allowed_host"]:
                log(f"added by the emulation: hostAliases 127.0.0.1 {plan['allowed_host']} (the origin) and "
                    "EGRESSD_DESTINATIONS__ALLOW_CIDRS=127.0.0.0/8")
            else:
                log("no rule of this configuration allows a host on 443: the allowed request is skipped")
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
