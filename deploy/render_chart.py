#!/usr/bin/env python3
"""Render the egressd Helm chart offline with Helm's own engine (helm-python-sdk binds Helm's Go SDK), the way
`helm lint` and `helm template` would, for hosts without the helm binary.

usage: render_chart.py CHART [VALUES.yaml ...] > rendered.yaml
Lints the chart (errors fail), renders it with the values files merged in order, and prints every rendered
manifest as one multi-document YAML stream, after a "# egressd-values: PATH" comment per values file.
"""
import os
import sys

import yaml
from helm_python import Chart, lint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    chart_dir, value_files = sys.argv[1], sys.argv[2:]
    values: dict = {}
    for path in value_files:
        with open(path, encoding="utf-8") as f:
            values = merge(values, yaml.safe_load(f) or {})

    result = lint(chart_dir, values or None, strict=True, namespace="egressd", kube_version="1.30.0")
    errors = result.get("errors") or []
    for m in result.get("messages") or []:
        # severity: 1 info, 2 warning, 3 error
        if m.get("severity", 0) >= 2:
            errors.append(f"{m.get('path')}: {m.get('error')}")
    if errors:
        for e in errors:
            print(f"helm lint {chart_dir}: {e}", file=sys.stderr)
        return 1

    rendered = Chart.load(chart_dir).render(values, name="egressd", namespace="egressd", is_install=True)
    docs = []
    for name in sorted(rendered):
        if not name.endswith((".yaml", ".yml")):
            continue
        text = rendered[name].strip()
        if text and any(d for d in yaml.safe_load_all(text)):
            docs.append(f"# Source: {name}\n{text}")
    # The values files, for deploy/check_rendered.py (which compares some values with what was rendered).
    header = "".join(f"# egressd-values: {os.path.relpath(os.path.abspath(p), REPO)}\n" for p in value_files)
    sys.stdout.write(header + "\n---\n".join(docs) + "\n")
    return 0


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


if __name__ == "__main__":
    sys.exit(main())
