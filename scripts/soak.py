#!/usr/bin/env python3
"""Bounded soak test for egressd: mixed allowed, denied and bulk traffic against a local TLS origin, an optional
config reload (SIGHUP), and egressd's RSS and open descriptors sampled throughout. Exits non-zero when either
keeps growing after warm-up, when requests fail, or when egressd dies.

Growth rule (both RSS and descriptors): the samples after warm-up (the first --warmup fraction of the run) are
split into thirds; the run fails if the maximum of the last third exceeds the maximum of the first third by
more than the tolerance (RSS: --rss-tolerance percent plus --rss-slack-kib; descriptors: --fd-slack). The
least-squares slope over the same samples is reported for information.

Only the Python standard library, openssl (for the origin's certificate) and cargo are needed.
"""

import argparse
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGIN = "origin.soak.test"
DENIED = "denied.soak.test"
BULK_BYTES = 4 * 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- origins ---


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"x" * BULK_BYTES if self.path.startswith("/bulk") else b"hello from soak origin"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 256


def start_origins(tmp):
    cert, key = os.path.join(tmp, "origin.pem"), os.path.join(tmp, "origin.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ORIGIN}",
         "-addext", f"subjectAltName=DNS:{ORIGIN}", "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    tls = Server(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
    plain = Server(("127.0.0.1", 0), Handler)
    for s in (tls, plain):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    return cert, tls.server_address[1], plain.server_address[1]


# --- egressd ---


def config_text(listen_port, tls_port, plain_port, idle):
    return f"""listen: 127.0.0.1:{listen_port}
admin:
  listen: "off"
allow:
  - name: soak-tls
    hosts: ["{ORIGIN}"]
    ports: [{tls_port}]
  - name: soak-plain
    hosts: ["{ORIGIN}"]
    ports: [{plain_port}]
destinations:
  allow_cidrs: ["127.0.0.1/32"]
dns:
  hosts:
    {ORIGIN}: ["127.0.0.1"]
    {DENIED}: ["127.0.0.1"]
timeouts:
  idle: {idle}
"""


def build(debug):
    cmd = ["cargo", "build", "--locked", "--bin", "egressd"] + ([] if debug else ["--release"])
    subprocess.run(cmd, cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "debug" if debug else "release", "egressd")


# --- traffic ---


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = {}

    def add(self, key):
        with self.lock:
            self.n[key] = self.n.get(key, 0) + 1


def worker(kind, proxy_port, tls_port, plain_port, cafile, stop, counts):
    ctx = ssl.create_default_context(cafile=cafile)
    while not stop.is_set():
        try:
            if kind == "denied":
                c = http.client.HTTPSConnection("127.0.0.1", proxy_port, timeout=10, context=ctx)
                c.set_tunnel(f"{DENIED}:{tls_port}")
                try:
                    c.request("GET", "/")
                    counts.add("denied_unexpected_success")
                except OSError as e:
                    counts.add("denied_ok" if "403" in str(e) else "denied_error")
                finally:
                    c.close()
                continue
            if kind == "plain":
                c = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
                c.request("GET", f"http://{ORIGIN}:{plain_port}/")
            else:
                c = http.client.HTTPSConnection("127.0.0.1", proxy_port, timeout=30, context=ctx)
                c.set_tunnel(f"{ORIGIN}:{tls_port}")
                c.request("GET", "/bulk" if kind == "bulk" else "/")
            r = c.getresponse()
            body = r.read()
            want = BULK_BYTES if kind == "bulk" else len(b"hello from soak origin")
            counts.add(f"{kind}_ok" if r.status == 200 and len(body) == want else f"{kind}_error")
            c.close()
        except Exception:  # noqa: BLE001 - every failure is counted, the run goes on
            counts.add(f"{kind}_error")
            time.sleep(0.05)


# --- sampling and the verdict ---


def sample(pid):
    rss = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def slope(xs, ys):
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def growth(samples, key, pct, slack):
    """(ok, first-third max, last-third max, slope per minute) for samples[i][key]."""
    third = max(1, len(samples) // 3)
    first = max(s[key] for s in samples[:third])
    last = max(s[key] for s in samples[-third:])
    per_min = slope([s["t"] for s in samples], [s[key] for s in samples]) * 60
    return last <= first * (1 + pct / 100) + slack, first, last, per_min


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600, help="seconds of traffic (default 600)")
    ap.add_argument("--no-reload", action="store_true", help="do not reload the configuration")
    ap.add_argument("--reload-every", type=float, default=5,
                    help="seconds between config rewrites + SIGHUP (default 5)")
    ap.add_argument("--binary", help="use this egressd binary instead of building one")
    ap.add_argument("--debug", action="store_true", help="build the debug binary instead of the release one")
    ap.add_argument("--interval", type=float, default=3, help="seconds between samples (default 3)")
    ap.add_argument("--warmup", type=float, default=0.2, help="fraction of the run ignored (default 0.2)")
    ap.add_argument("--clients", type=int, default=4, help="workers per traffic kind (default 4)")
    ap.add_argument("--rss-tolerance", type=float, default=10, help="percent (default 10)")
    ap.add_argument("--rss-slack-kib", type=int, default=4096, help="KiB (default 4096)")
    ap.add_argument("--fd-slack", type=int, default=8, help="descriptors (default 8)")
    ap.add_argument("--max-error-ratio", type=float, default=0.001, help="failed/allowed requests (default 0.001)")
    ap.add_argument("--json", help="write samples, counts and the verdict to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (config, egressd's log)")
    args = ap.parse_args()

    binary = args.binary or build(args.debug)
    tmp = tempfile.mkdtemp(prefix="egressd-soak-")
    cafile, tls_port, plain_port = start_origins(tmp)
    proxy_port = free_port()
    cfg = os.path.join(tmp, "egressd.yaml")
    with open(cfg, "w") as f:
        f.write(config_text(proxy_port, tls_port, plain_port, "15m"))
    log = open(os.path.join(tmp, "egressd.log"), "wb")
    proc = subprocess.Popen([binary, "run", "--config", cfg], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", proxy_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        print("egressd did not start listening", file=sys.stderr)
        proc.kill()
        return 2

    stop, counts = threading.Event(), Counts()
    # Denials are cheap and would flood the log: half as many workers.
    kinds = ["tls"] * args.clients + ["plain"] * args.clients + ["denied"] * max(1, args.clients // 2) + ["bulk"]
    threads = [threading.Thread(target=worker, args=(k, proxy_port, tls_port, plain_port, cafile, stop, counts),
                                daemon=True) for k in kinds]
    for t in threads:
        t.start()

    samples, reloads, started = [], [], time.monotonic()
    next_reload = args.reload_every
    while (now := time.monotonic() - started) < args.duration and proc.poll() is None:
        rss, fds = sample(proc.pid)
        samples.append({"t": round(now, 1), "rss_kib": rss, "fds": fds})
        print(f"t={now:6.1f}s rss={rss} KiB fds={fds} {json.dumps(counts.n, sort_keys=True)}", flush=True)
        while not args.no_reload and now >= next_reload:
            # Each reload changes the idle timeout only (alternating): traffic must not notice.
            with open(cfg, "w") as f:
                f.write(config_text(proxy_port, tls_port, plain_port, "10m" if len(reloads) % 2 == 0 else "15m"))
            proc.send_signal(signal.SIGHUP)
            reloads.append(round(now, 1))
            next_reload += args.reload_every
        time.sleep(min(args.interval, args.reload_every) if not args.no_reload else args.interval)
    stop.set()
    for t in threads:
        t.join(timeout=35)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=35)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()

    steady = [s for s in samples if s["t"] >= args.duration * args.warmup]
    failures = []
    if not alive:
        rc = proc.returncode
        if rc == -signal.SIGHUP:
            failures.append("egressd was terminated by the reload's SIGHUP (a build without reload on "
                            "SIGHUP; run with --no-reload)")
        else:
            failures.append(f"egressd exited early: {'signal ' + str(-rc) if rc < 0 else 'status ' + str(rc)}")
    result = {"duration_s": args.duration, "reloads": len(reloads), "counts": counts.n, "samples": samples}
    if len(steady) < 3:
        failures.append(f"only {len(steady)} samples after warm-up; run longer or sample more often")
    else:
        for key, pct, slack, unit in (("rss_kib", args.rss_tolerance, args.rss_slack_kib, "KiB"),
                                      ("fds", 0, args.fd_slack, "")):
            ok, first, last, per_min = growth(steady, key, pct, slack)
            result[key] = {"first_third_max": first, "last_third_max": last, "slope_per_min": round(per_min, 2)}
            print(f"{key}: first third max {first}{unit}, last third max {last}{unit}, "
                  f"slope {per_min:+.2f}{unit}/min -> {'ok' if ok else 'GROWING'}")
            if not ok:
                failures.append(f"{key} grew from {first} to {last} after warm-up")
    allowed = sum(v for k, v in counts.n.items() if k.endswith("_ok") and not k.startswith("denied"))
    errors = sum(v for k, v in counts.n.items() if k.endswith("_error") or k.endswith("_unexpected_success"))
    if allowed == 0:
        failures.append("no allowed request succeeded")
    elif errors / allowed > args.max_error_ratio:
        failures.append(f"{errors} failed requests against {allowed} successful ones")
    result["failures"] = failures
    reloaded_lines = 0
    with open(os.path.join(tmp, "egressd.log"), "rb") as f:
        reloaded_lines = sum(1 for line in f if b"configuration reloaded" in line)
    result["reloads_applied"] = reloaded_lines
    print(f"requests: {json.dumps(counts.n, sort_keys=True)}; {len(reloads)} reloads sent, "
          f"{reloaded_lines} applied")
    if reloads and reloaded_lines == 0:
        failures.append("no reload was applied (no 'configuration reloaded' line in egressd's log)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    for msg in failures:
        print(f"FAIL: {msg}", file=sys.stderr)
    if args.keep:
        print(f"config and egressd's log kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print("soak: " + ("FAIL" if failures else "ok"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
