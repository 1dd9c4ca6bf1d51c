#!/usr/bin/env bash
# Checks the deployment files (README "Deploying to Kubernetes"): lints the Dockerfile; renders the kustomize
# base, overlays and example and the Helm chart (default values and every ci/*.yaml); validates every rendered
# object against the Kubernetes schemas; cross-checks ports, probes, config path, drain period and network
# policies in every rendered set (deploy/check_rendered.py: the agents' NO_PROXY and NetworkPolicy agree too, the
# parent proxies' credentials are mounted Secret files and egressd's egress policy reaches the parents; with
# client groups by namespace, service account or pod labels, the token, the RBAC and the API server rule are there,
# and without them none of it),
# checks that each overlay's agent files are what its agent-network.yaml gives (deploy/agent_network.py) and runs `egressd validate` on its config; starts
# every rendered Deployment as the kubelet would (deploy/pod_emulation.py, with stand-in parent proxies where
# the config has parents, and a stand-in API server where the pod mounts its service account token); checks and unit-tests the alert rules and checks the dashboard's queries with promtool; scans the Dockerfile and the
# rendered objects with checkov. Run by .ci/run. By hand: `bash deploy/check.sh --install` once (as root), then
# `bash deploy/check.sh`. Tools: kubectl (with kustomize), promtool (Debian package prometheus), and in
# $DEPLOY_CHECK_VENV (default /opt/egressd-deploy-venv) the packages of deploy/requirements.txt.
# DEPLOY_CHECK_BIN names the egressd binary (default target/release/egressd, else target/debug/egressd).
# EGRESSD_* variables are cleared first: egressd would read them as config overrides.
set -euo pipefail
cd "$(dirname "$0")/.."

while read -r name; do unset "$name"; done < <(compgen -e | grep '^EGRESSD_' || true)
venv=${DEPLOY_CHECK_VENV:-/opt/egressd-deploy-venv}
# Oldest and newest Kubernetes versions the manifests are validated against (preStop sleep needs 1.30).
kube_versions=(1.30 1.37)

if [ "${1:-}" = "--install" ]; then
  packages=()
  command -v kubectl >/dev/null || packages+=(kubectl)
  command -v promtool >/dev/null || packages+=(prometheus)
  if [ ${#packages[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${packages[@]}"
  fi
  if [ ! -x "$venv/bin/checkov" ] || [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/kubernetes-validate" ] \
    || ! "$venv/bin/python" -c 'import helm_python' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r deploy/requirements.txt
  fi
  exit 0
fi

fail() { echo "deploy/check.sh: $*" >&2; exit 1; }
for tool in kubectl promtool; do
  command -v "$tool" >/dev/null || fail "$tool not found (bash deploy/check.sh --install)"
done
for tool in hadolint kubernetes-validate checkov python; do
  [ -x "$venv/bin/$tool" ] || fail "$venv/bin/$tool not found (bash deploy/check.sh --install)"
done
egressd=${DEPLOY_CHECK_BIN:-}
if [ -z "$egressd" ]; then
  for candidate in target/release/egressd target/debug/egressd; do
    if [ -x "$candidate" ]; then egressd=$candidate; break; fi
  done
fi
[ -n "$egressd" ] && [ -x "$egressd" ] || fail "no egressd binary: cargo build first, or set DEPLOY_CHECK_BIN"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== hadolint Dockerfile"
"$venv/bin/hadolint" Dockerfile

echo "== kustomize"
mkdir "$out/rendered"
for dir in deploy/kubernetes/base deploy/kubernetes/overlays/* deploy/kubernetes/examples/*; do
  name=kustomize-$(basename "$dir")
  kubectl kustomize "$dir" > "$out/rendered/$name.yaml"
  echo "$dir: $(grep -c '^kind:' "$out/rendered/$name.yaml") objects"
done

echo "== helm chart"
chart=deploy/helm/egressd
"$venv/bin/python" deploy/render_chart.py "$chart" > "$out/rendered/helm-default.yaml"
echo "$chart (default values): $(grep -c '^kind:' "$out/rendered/helm-default.yaml") objects"
for values in "$chart"/ci/*.yaml; do
  name=helm-$(basename "$values" .yaml)
  "$venv/bin/python" deploy/render_chart.py "$chart" "$values" > "$out/rendered/$name.yaml"
  echo "$chart ($values): $(grep -c '^kind:' "$out/rendered/$name.yaml") objects"
done
# An agent NetworkPolicy without the API server address must be refused, not rendered open.
printf 'agents: [{namespace: castai-agent, networkPolicy: true}]\nagentNetwork: {preset: gke}\n' > "$out/no-apiserver.yaml"
if "$venv/bin/python" deploy/render_chart.py "$chart" "$out/no-apiserver.yaml" > /dev/null 2> "$out/err"; then
  fail "the chart rendered an agent NetworkPolicy without apiServer.cidrs"
fi
grep -q 'apiServer.cidrs is required' "$out/err" || { cat "$out/err" >&2; fail "unexpected error for missing apiServer.cidrs"; }
# Agents without agentNetwork: their NO_PROXY and NetworkPolicy would not know the cluster's ranges.
printf 'agents: [{namespace: castai-agent}]\n' > "$out/no-network.yaml"
if "$venv/bin/python" deploy/render_chart.py "$chart" "$out/no-network.yaml" > /dev/null 2> "$out/err"; then
  fail "the chart rendered agents without agentNetwork.preset"
fi
grep -q 'agentNetwork.preset is required' "$out/err" || { cat "$out/err" >&2; fail "unexpected error for missing agentNetwork.preset"; }
# A misspelt value is refused by values.schema.json instead of being ignored.
printf 'config: {vendor: [castai-us]}\n' > "$out/typo.yaml"
if "$venv/bin/python" deploy/render_chart.py "$chart" "$out/typo.yaml" > /dev/null 2> "$out/err"; then
  fail "the chart accepted the unknown value config.vendor"
fi
grep -q "additional properties 'vendor' not allowed" "$out/err" || { cat "$out/err" >&2; fail "unexpected error for config.vendor"; }
# DNS preset custom without peers would let no DNS query out: refused.
printf 'networkPolicy: {dns: {preset: custom}}\n' > "$out/no-dns.yaml"
if "$venv/bin/python" deploy/render_chart.py "$chart" "$out/no-dns.yaml" > /dev/null 2> "$out/err"; then
  fail "the chart rendered networkPolicy.dns.preset custom without networkPolicy.dns.extra"
fi
grep -q 'preset custom needs networkPolicy.dns.extra' "$out/err" || { cat "$out/err" >&2; fail "unexpected error for DNS preset custom"; }
# A parent proxy by name without its addresses: the egress NetworkPolicy could not let egressd reach it.
printf 'config: {parents: [{name: corp, url: "http://proxy.corp.example:3128"}]}\n' > "$out/no-parent-cidrs.yaml"
if "$venv/bin/python" deploy/render_chart.py "$chart" "$out/no-parent-cidrs.yaml" > /dev/null 2> "$out/err"; then
  fail "the chart rendered a parent by name without config.parents[].cidrs"
fi
grep -q 'config.parents\[0\].cidrs is required' "$out/err" || { cat "$out/err" >&2; fail "unexpected error for a parent without cidrs"; }
# Parents under config.extra would bypass the credentials mount and the NetworkPolicy: refused.
printf 'config: {extra: {parents: [{name: corp, url: "http://10.1.2.3:3128"}]}}\n' > "$out/extra-parents.yaml"
if "$venv/bin/python" deploy/render_chart.py "$chart" "$out/extra-parents.yaml" > /dev/null 2> "$out/err"; then
  fail "the chart rendered config.extra.parents"
fi
grep -q 'config.extra.parents: set config.parents' "$out/err" || { cat "$out/err" >&2; fail "unexpected error for config.extra.parents"; }
# A group by namespace, service account or pod labels without workloadIdentity: egressd could not list pods.
printf 'config: {clients: [{name: castai, namespaces: [castai-agent]}]}\n' > "$out/no-workload-identity.yaml"
if "$venv/bin/python" deploy/render_chart.py "$chart" "$out/no-workload-identity.yaml" > /dev/null 2> "$out/err"; then
  fail "the chart rendered a workload client group without workloadIdentity.enabled"
fi
grep -q 'need workloadIdentity.enabled=true' "$out/err" || { cat "$out/err" >&2; fail "unexpected error for a workload group without workloadIdentity"; }
# workloadIdentity without such a group: RBAC and a token for nothing.
printf 'workloadIdentity: {enabled: true}\napiServer: {cidrs: [192.0.2.1/32]}\nconfig: {clients: [{name: ci, cidrs: [10.42.0.0/16]}]}\n' > "$out/idle-workload-identity.yaml"
if "$venv/bin/python" deploy/render_chart.py "$chart" "$out/idle-workload-identity.yaml" > /dev/null 2> "$out/err"; then
  fail "the chart rendered workloadIdentity without a group that uses it"
fi
grep -q 'no config.clients group uses namespaces' "$out/err" || { cat "$out/err" >&2; fail "unexpected error for an unused workloadIdentity"; }
# workloadIdentity with the egress NetworkPolicy but without the API server's address: it could not list pods.
printf 'workloadIdentity: {enabled: true}\nconfig: {clients: [{name: castai, namespaces: [castai-agent]}]}\n' > "$out/no-apiserver-wi.yaml"
if "$venv/bin/python" deploy/render_chart.py "$chart" "$out/no-apiserver-wi.yaml" > /dev/null 2> "$out/err"; then
  fail "the chart rendered workloadIdentity without apiServer.cidrs"
fi
grep -q 'apiServer.cidrs is required with workloadIdentity.enabled' "$out/err" || { cat "$out/err" >&2; fail "unexpected error for workloadIdentity without apiServer.cidrs"; }
# Groups under config.extra would bypass that check: refused.
printf 'config: {extra: {clients: [{name: castai, namespaces: [castai-agent]}]}}\n' > "$out/extra-clients.yaml"
if "$venv/bin/python" deploy/render_chart.py "$chart" "$out/extra-clients.yaml" > /dev/null 2> "$out/err"; then
  fail "the chart rendered config.extra.clients"
fi
grep -q 'config.extra.clients: set config.clients' "$out/err" || { cat "$out/err" >&2; fail "unexpected error for config.extra.clients"; }
# An https:// parent with a CA bundle from a ConfigMap (and one from a Secret): rendered and cross-checked like
# the others, but not validated or started (the egressd under test may not speak TLS to parents yet).
cat > "$out/https-parents.yaml" <<'YAML'
config:
  parents:
    - name: corp
      url: https://proxy.corp.example:3129
      credentials: {secretName: corp-proxy-credentials, key: credentials}
      ca: {configMapName: corp-proxy-ca, key: ca.crt}
      cidrs: ["10.80.0.10/32"]
    - name: corp-v6
      url: https://[fd00:80::10]:3129
      ca: {secretName: corp-v6-ca, key: ca.pem}
YAML
"$venv/bin/python" deploy/render_chart.py "$chart" "$out/https-parents.yaml" > "$out/https-parents-rendered.yaml"
"$venv/bin/python" deploy/check_rendered.py "$out/https-parents-rendered.yaml" -
for want in 'ca: /etc/egressd-parents/corp-ca.pem' 'ca: /etc/egressd-parents/corp-v6-ca.pem' 'path: corp-v6-ca.pem'; do
  grep -q "$want" "$out/https-parents-rendered.yaml" || fail "https parents: '$want' not rendered"
done
echo "$chart (https parents with CA bundles): rendered and cross-checked (not validated: TLS to parents)"

echo "== agents' network (overlay files generated from their agent-network.yaml)"
"$venv/bin/python" deploy/agent_network.py --check deploy/kubernetes/overlays/*/
# ... and a change of values that was not regenerated is caught.
mkdir "$out/stale"
cp -r deploy/kubernetes/overlays/cloudcasa/. "$out/stale/"
sed -i 's/preset: eks/preset: aks/' "$out/stale/agent-network.yaml"
if "$venv/bin/python" deploy/agent_network.py --check "$out/stale" 2> "$out/err"; then
  fail "agent_network.py --check accepted agent files generated from other values"
fi
grep -q 'differs from what agent-network.yaml gives' "$out/err" || { cat "$out/err" >&2; fail "unexpected error for stale agent files"; }

echo "== Kubernetes schemas (${kube_versions[*]}, strict)"
for v in "${kube_versions[@]}"; do
  # Objects of CRDs (ServiceMonitor, PrometheusRule) have no bundled schema: a warning, not a failure.
  "$venv/bin/kubernetes-validate" --strict --quiet --no-warn -k "$v" "$out"/rendered/*.yaml
done

echo "== consistency and egressd validate (every rendered set)"
for rendered in "$out"/rendered/*.yaml; do
  "$venv/bin/python" deploy/check_rendered.py "$rendered" "$out/configs"
done
# ... and each of those checks catches the breakage it is there for.
"$venv/bin/python" deploy/check_rendered.py --self-test "$out"/rendered/{helm-cloudcasa-tls-metrics-values,helm-every-config-key-values,helm-agents-aks-values,helm-parents-values,helm-workload-identity-values,kustomize-castai-monitoring-tls,kustomize-castai-parent-proxy,kustomize-castai-workload-identity,kustomize-cloudcasa,kustomize-cloudcasa-cluster-policy}.yaml
for cfg in "$out"/configs/*.yaml; do
  if ! msg=$("$egressd" validate --config "$cfg" 2>&1); then
    echo "$msg" >&2
    fail "$(basename "$cfg") is not a valid egressd config"
  fi
  echo "$(basename "$cfg"): $(echo "$msg" | tail -n 1)"
done

echo "== image runtime (as in the container: UID 65532, read-only filesystem, the image's config)"
# No container engine here: run the binary the image would carry the way the image runs it, in a private
# network and mount namespace with every filesystem read-only, and check it serves decisions and exits 0 on
# SIGTERM.
if [ "$(id -u)" = 0 ] && [ -d /mnt ] && command -v unshare >/dev/null && command -v setpriv >/dev/null \
  && command -v curl >/dev/null; then
  uid=$(sed -n 's/^USER \([0-9]*\):.*/\1/p' Dockerfile)
  # /mnt (in the private mount namespace only) holds a copy of the binary, the config and the log, so the
  # unprivileged UID needs no access to the checkout.
  unshare --mount --net bash -euo pipefail -c '
    mount --make-rprivate /
    mount -t tmpfs -o mode=0755 tmpfs /mnt
    install -m 0755 "$1" /mnt/egressd
    install -m 0644 deploy/container/egressd.yaml /mnt/egressd.yaml
    install -m 0666 /dev/null /mnt/log
    findmnt -rn -o TARGET | grep -Ev "^(/proc|/sys|/dev|/mnt$)" | while read -r m; do
      mount -o remount,bind,ro "$m" 2>/dev/null || true
    done
    ip link set lo up
    if touch /egressd-smoke 2>/dev/null; then echo "root filesystem still writable" >&2; exit 1; fi
    setpriv --reuid "$2" --regid "$2" --clear-groups /mnt/egressd run --config /mnt/egressd.yaml > /mnt/log 2>&1 &
    pid=$!
    for _ in $(seq 50); do
      grep -q "egressd listening" /mnt/log && break
      sleep 0.1
    done
    code=$(curl -s -o /dev/null -w "%{http_code}" -x http://127.0.0.1:3128 http://denied.example/ || true)
    # The probes and the scrape target of the manifests, on the admin port of the image config.
    probes=""
    for path in /healthz /readyz /metrics; do
      probes="$probes $path=$(curl -s -o /dev/null -w "%{http_code}" "http://127.0.0.1:9090$path" || true)"
    done
    # The listeners bind [::]: IPv6 too (probes on IPv6-only clusters).
    probes="$probes v6=$(curl -g -s -o /dev/null -w "%{http_code}" "http://[::1]:9090/healthz" || true)"
    probes="$probes v6proxy=$(curl -s -o /dev/null -w "%{http_code}" -x "http://[::1]:3128" http://denied.example/ || true)"
    metrics=$(curl -s http://127.0.0.1:9090/metrics || true)
    kill -TERM "$pid"
    wait "$pid" || { cat /mnt/log >&2; echo "egressd exited non-zero after SIGTERM" >&2; exit 1; }
    [ "$code" = 403 ] || { cat /mnt/log >&2; echo "expected 403 for a denied request, got $code" >&2; exit 1; }
    grep -q "\"event\":\"decision\".*\"reason\":\"denied_no_rule\"" /mnt/log || { cat /mnt/log >&2; exit 1; }
    [ "$probes" = " /healthz=200 /readyz=200 /metrics=200 v6=200 v6proxy=403" ] || { cat /mnt/log >&2; echo "admin endpoints:$probes" >&2; exit 1; }
    echo "$metrics" | grep -q "^egressd_decisions_total{.*reason=\"denied_no_rule\"" \
      || { echo "the denied request is not counted in /metrics" >&2; exit 1; }
    echo "UID $2, read-only filesystem: served a decision (403 denied_no_rule), counted it in /metrics,"
    echo "  /healthz and /readyz answered 200 (IPv4 and IPv6), exit 0 after SIGTERM"
  ' smoke "$egressd" "$uid"
else
  echo "skipped: needs root, /mnt, unshare, setpriv and curl"
fi

echo "== pod emulation (every rendered Deployment, started as the kubelet starts it)"
# deploy/pod_emulation.py: argv, environment (service links included), kubelet-layout volumes, securityContext,
# /etc/hosts and resolv.conf, PID 1, in its own mount, PID and network namespaces; then the probes on the pod's
# IPv4 and IPv6 addresses, a refused and an allowed request, a ConfigMap swap, preStop and SIGTERM.
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null && command -v curl >/dev/null \
  && command -v openssl >/dev/null; then
  for rendered in "$out"/rendered/*.yaml; do
    "$venv/bin/python" deploy/pod_emulation.py "$rendered" "$egressd" Dockerfile \
      || fail "$(basename "$rendered"): the pod does not start and serve as the kubelet would run it"
  done
else
  echo "skipped: needs root, unshare, ip, curl and openssl"
fi

echo "== alert rules (promtool)"
# The rule file, its unit tests, and every rendered PrometheusRule's groups.
promtool check rules deploy/prometheus/egressd-rules.yaml
promtool test rules deploy/prometheus/egressd-rules.test.yaml
"$venv/bin/python" - "$out/rendered" "$out/rules" <<'PY'
import os, sys, yaml
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst)
for f in sorted(os.listdir(src)):
    for doc in yaml.safe_load_all(open(os.path.join(src, f))):
        if doc and doc.get("kind") == "PrometheusRule":
            with open(os.path.join(dst, f"{f[:-5]}--{doc['metadata']['name']}.yaml"), "w") as out:
                yaml.safe_dump({"groups": doc["spec"]["groups"]}, out)
PY
for rules in "$out"/rules/*.yaml; do
  promtool check rules "$rules"
done
# The dashboard's queries parse as PromQL (Grafana's variables replaced by sample values).
"$venv/bin/python" - deploy/grafana/egressd.json "$out/rules/dashboard.yaml" <<'PY'
import json, sys, yaml
dashboard = json.load(open(sys.argv[1]))
subst = {"$__rate_interval": "5m", "$__range": "1h", "$namespace": ".*", "$pod": ".*"}
rules = []
for panel in dashboard["panels"]:
    for i, target in enumerate(panel.get("targets", [])):
        expr = target["expr"]
        for k, v in subst.items():
            expr = expr.replace(k, v)
        rules.append({"record": f"dashboard:panel{panel['id']}:{i}", "expr": expr})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
PY
promtool check rules "$out/rules/dashboard.yaml"

echo "== checkov"
"$venv/bin/checkov" --quiet --compact --skip-download --framework dockerfile -f Dockerfile
"$venv/bin/checkov" --quiet --compact --skip-download --framework kubernetes -d "$out/rendered"
echo "deploy checks passed"
