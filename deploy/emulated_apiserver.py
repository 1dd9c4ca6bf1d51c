"""A stand-in Kubernetes API server for deploy/pod_emulation.py: what egressd's workload identity asks of the real
one, on the address the kubelet gives the pod (KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT), with a
certificate for that IP address signed by the CA the pod's token directory holds.

- HTTPS (HTTP/1.1, keep-alive), the pod's service account token required as `Authorization: Bearer` (401
  otherwise);
- authorization as RBAC would decide it from the rendered ClusterRoles and Roles bound to the pod's
  ServiceAccount (403 Forbidden otherwise), and the discovery paths (/version, /api, /apis, /healthz, ...) every
  authenticated user may read;
- pods: `GET /api/v1/pods` and `/api/v1/namespaces/NS/pods` as a list (kind PodList, metadata.resourceVersion,
  items without kind and apiVersion, `limit` and `continue` pages, labelSelector and fieldSelector on equality)
  or, with `watch=true`, a watch: chunked newline-delimited events (ADDED, MODIFIED, DELETED) after the
  requested resourceVersion, a BOOKMARK now and then when asked for (allowWatchBookmarks), `sendInitialEvents`,
  closed after timeoutSeconds; `GET .../namespaces/NS/pods/NAME`;
- lists are held until `release()`, so that what egressd does before its first pod list can be seen;
- `add`, `delete` change the pods and wake the watches; `stop` closes the listener and every connection (the API
  server unreachable), `start` opens it again.

Every request is recorded in `requests` as (method, target, verb, status).
"""

import json
import re
import socket
import ssl
import threading
import time
import urllib.parse

BOOKMARK_EVERY = 15.0
HOLD_LIST_AT_MOST = 60.0
DISCOVERY = {
    "/version": {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "platform": "linux/amd64"},
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
}
# Paths the system:discovery and system:public-info-viewer roles let every authenticated user read.
NON_RESOURCE = ("/version", "/api", "/apis", "/healthz", "/livez", "/readyz", "/openapi/v2", "/openapi/v3")
POD_PATH = re.compile(r"^/api/v1(?:/namespaces/([^/]+))?/pods(?:/([^/]+))?$")
RESOURCE_PATH = re.compile(r"^/(?:api/(v1)|apis/([^/]+)/([^/]+))(?:/namespaces/([^/]+))?/([^/]+)(?:/([^/]+))?")
FIELDS = {
    "metadata.name": lambda p: p["metadata"]["name"],
    "metadata.namespace": lambda p: p["metadata"]["namespace"],
    "spec.nodeName": lambda p: p["spec"].get("nodeName", ""),
    "spec.serviceAccountName": lambda p: p["spec"].get("serviceAccountName", ""),
    "spec.hostNetwork": lambda p: str(bool(p["spec"].get("hostNetwork"))).lower(),
    "status.phase": lambda p: p["status"].get("phase", ""),
    "status.podIP": lambda p: p["status"].get("podIP", ""),
}


class BadRequest(Exception):
    pass


def selector_matches(text, value_of):
    """An equality-based selector (`a=b,c!=d`, `a`, `!a`) against value_of(key) (None: absent)."""
    for term in [t.strip() for t in (text or "").split(",") if t.strip()]:
        m = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", term)
        if m:
            key, op, want = m.group(1).strip(), m.group(2), m.group(3).strip()
            have = value_of(key)
            if (op == "!=") == (have == want):
                return False
        elif term.startswith("!"):
            if value_of(term[1:].strip()) is not None:
                return False
        elif " in " in term or " notin " in term:
            raise BadRequest(f"set-based selector {term!r} is not emulated")
        elif value_of(term) is None:
            return False
    return True


class EmulatedApiServer:
    def __init__(self, address, port, cert, key, token, account, rules, pods):
        """rules: [(rule, cluster_wide)] bound to `account` ("system:serviceaccount:NS:NAME"); pods: pod objects
        (without resourceVersion)."""
        self.address, self.port, self.token, self.account, self.rules = address, port, token, account, rules
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.cond = threading.Condition()
        self.rv = 100
        self.pods = {}
        self.events = []  # (rv, type, pod)
        for p in pods:
            self.rv += 1
            p["metadata"]["resourceVersion"] = str(self.rv)
            self.pods[(p["metadata"]["namespace"], p["metadata"]["name"])] = p
        self.gate = threading.Event()
        self.requests = []
        self.arrived = []  # (method, target, verb) as each request arrives, before it is answered
        self.conns = set()
        self.sock = None
        self.lock = threading.Lock()
        self.listening = threading.Condition(self.lock)
        self.acceptor = None

    # --- control (the emulation) ---

    def start(self, make_socket):
        """Listen on a socket from make_socket(address, port) (made in the right network namespace). One thread
        accepts, for every start: the first call must come from a thread that can start threads."""
        sock = make_socket(self.address, self.port)
        with self.listening:
            self.sock = sock
            self.listening.notify_all()
        if self.acceptor is None:
            self.acceptor = threading.Thread(target=self._accept, daemon=True)
            self.acceptor.start()

    def stop(self):
        """The API server goes away: no listener, every connection (watches included) cut."""
        with self.listening:
            sock, self.sock = self.sock, None
            conns, self.conns = list(self.conns), set()
        if sock:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            except OSError:
                pass
            sock.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        with self.cond:
            self.cond.notify_all()

    def release(self):
        """Serve the lists held so far, and every later one at once."""
        self.gate.set()

    def add(self, pod):
        self._change("ADDED", pod)

    def delete(self, namespace, name):
        self._change("DELETED", self.pods[(namespace, name)])


    def _change(self, kind, pod):
        with self.cond:
            self.rv += 1
            pod = json.loads(json.dumps(pod))
            pod["metadata"]["resourceVersion"] = str(self.rv)
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            if kind == "DELETED":
                self.pods.pop(key, None)
            else:
                self.pods[key] = pod
            self.events.append((self.rv, kind, pod))
            self.cond.notify_all()

    # --- serving ---

    def _accept(self):
        while True:
            with self.listening:
                while self.sock is None:
                    self.listening.wait()
                sock = self.sock
            try:
                conn, _ = sock.accept()
            except OSError:
                continue  # stopped: wait for the next start
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, raw):
        with self.lock:
            if self.sock is None:
                raw.close()
                return
            self.conns.add(raw)
        try:
            raw.settimeout(30)
            conn = self.ctx.wrap_socket(raw, server_side=True)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                    if len(buf) > 65536:
                        return
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = (lines[0].split(" ") + ["", ""])[:2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
                length = int(headers.get("content-length") or 0)
                while len(buf) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                buf = buf[length:]
                if not self._request(conn, method, target, headers):
                    return
        except (OSError, ssl.SSLError, ValueError):
            return
        finally:
            with self.lock:
                self.conns.discard(raw)
            try:
                raw.close()
            except OSError:
                pass

    def _send(self, conn, status, body, reason="OK"):
        data = json.dumps(body).encode()
        conn.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        return True

    def _status(self, conn, code, reason, message, record):
        self.requests.append(record + (code,))
        return self._send(conn, code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                       "message": message, "reason": reason, "code": code}, reason)

    def _allowed(self, verb, group, resource, namespace):
        for rule, cluster_wide in self.rules:
            if not cluster_wide and namespace is None:
                continue
            if (set(rule.get("apiGroups") or []) & {group, "*"} and set(rule.get("resources") or []) & {resource, "*"}
                    and set(rule.get("verbs") or []) & {verb, "*"}):
                return True
        return False

    def _request(self, conn, method, target, headers):
        url = urllib.parse.urlsplit(target)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        watch = query.get("watch") in ("true", "1")
        pod = POD_PATH.match(url.path)
        res = RESOURCE_PATH.match(url.path)
        verbs = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
        verb = verbs.get(method, method.lower())
        if method == "GET" and res and not res.group(6):
            verb = "watch" if watch else "list"
        elif method == "GET" and res and watch:
            verb = "watch"
        record = (method, target, verb)
        self.arrived.append(record)
        if headers.get("authorization") != f"Bearer {self.token}":
            return self._status(conn, 401, "Unauthorized", "Unauthorized", record)
        if url.path in NON_RESOURCE and method == "GET":
            if url.path in DISCOVERY:
                self.requests.append(record + (200,))
                return self._send(conn, 200, DISCOVERY[url.path])
            self.requests.append(record + (200,))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
            return True
        if not res:
            return self._status(conn, 403, "Forbidden", f'forbidden: User "{self.account}" cannot {verb} path '
                                f'"{url.path}"', record)
        group = res.group(2) or ""
        namespace, resource = res.group(4), res.group(5)
        if not self._allowed(verb, group, resource, namespace):
            scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
            return self._status(conn, 403, "Forbidden", f'{resource} is forbidden: User "{self.account}" cannot '
                                f'{verb} resource "{resource}" in API group "{group}" {scope}', record)
        if not pod:
            return self._status(conn, 404, "NotFound", "the server could not find the requested resource", record)
        namespace, name = pod.group(1), pod.group(2)
        try:
            if verb == "get":
                found = self.pods.get((namespace, name))
                if not found:
                    return self._status(conn, 404, "NotFound", f'pods "{name}" not found', record)
                self.requests.append(record + (200,))
                return self._send(conn, 200, dict(found, kind="Pod", apiVersion="v1"))
            if verb == "list":
                return self._list(conn, namespace, query, record)
            return self._watch(conn, namespace, name, query, record)
        except BadRequest as e:
            return self._status(conn, 400, "BadRequest", str(e), record)

    def _selected(self, namespace, name, query):
        out = []
        for (ns, n), p in sorted(self.pods.items()):
            if namespace and ns != namespace or name and n != name:
                continue
            labels = p["metadata"].get("labels") or {}
            if not selector_matches(query.get("labelSelector"), labels.get):
                continue

            def field(key):
                if key not in FIELDS:
                    raise BadRequest(f'"{key}" is not a known field selector: only "metadata.name", '
                                     '"metadata.namespace", "spec.nodeName", ... are supported')
                return FIELDS[key](p)
            if not selector_matches(query.get("fieldSelector"), field):
                continue
            out.append(p)
        return out

    def _hold(self):
        if not self.gate.is_set():
            self.gate.wait(HOLD_LIST_AT_MOST)

    def _list(self, conn, namespace, query, record):
        self._hold()
        with self.cond:
            items = self._selected(namespace, None, query)
            rv = str(self.rv)
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0)
        page = items[start:start + limit] if limit else items[start:]
        meta = {"resourceVersion": rv}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
            meta["remainingItemCount"] = len(items) - start - limit
        self.requests.append(record + (200,))
        return self._send(conn, 200, {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": page})

    def _watch(self, conn, namespace, name, query, record):
        initial = query.get("sendInitialEvents") == "true"
        if initial:
            self._hold()
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        self.requests.append(record + (200,))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n")

        def send(kind, obj):
            line = json.dumps({"type": kind, "object": dict(obj, kind="Pod", apiVersion="v1")}).encode() + b"\n"
            conn.sendall(f"{len(line):x}\r\n".encode() + line + b"\r\n")

        with self.cond:
            asked = query.get("resourceVersion")
            since = self.rv if not asked or asked == "0" or initial else int(asked)
            if asked == "0" or initial:
                for p in self._selected(namespace, name, query):
                    send("ADDED", p)
            if initial:
                send("BOOKMARK", {"metadata": {"resourceVersion": str(self.rv),
                                               "annotations": {"k8s.io/initial-events-end": "true"}}})
        deadline = time.time() + timeout
        last_bookmark = time.time()
        while time.time() < deadline and self.sock is not None:
            with self.cond:
                pending = [e for e in self.events if e[0] > since]
                if not pending:
                    self.cond.wait(min(1.0, max(0.0, deadline - time.time())))
                    pending = [e for e in self.events if e[0] > since]
                rv = self.rv
            for erv, kind, p in pending:
                since = erv
                if (namespace and p["metadata"]["namespace"] != namespace
                        or name and p["metadata"]["name"] != name):
                    continue
                selected = (selector_matches(query.get("labelSelector"), (p["metadata"].get("labels") or {}).get)
                            and selector_matches(query.get("fieldSelector"),
                                                 lambda k: FIELDS[k](p) if k in FIELDS else None))
                if selected:
                    send(kind, p)
            if bookmarks and time.time() - last_bookmark >= BOOKMARK_EVERY:
                send("BOOKMARK", {"metadata": {"resourceVersion": str(rv)}})
                last_bookmark = time.time()
        if self.sock is None:
            return False
        conn.sendall(b"0\r\n\r\n")
        return False


def make_certificates(workdir, ip, run):
    """A CA (the pod's ca.crt) and a server certificate for IP signed by it: paths (ca, cert, key). run(cmd)
    runs a command and raises on failure."""
    import os
    ca_key, ca = os.path.join(workdir, "kube-ca.key"), os.path.join(workdir, "kube-ca.crt")
    key, csr, cert = (os.path.join(workdir, f"kube-apiserver.{x}") for x in ("key", "csr", "crt"))
    ext = os.path.join(workdir, "kube-apiserver.ext")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=kubernetes",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", csr, "-subj", "/CN=kube-apiserver"])
    with open(ext, "w") as f:
        f.write(f"subjectAltName=IP:{ip},DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n")
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext])
    return ca, cert, key
