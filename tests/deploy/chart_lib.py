"""What the chart tests share: helm from ./.tools (scripts/deps.sh installs
it) and the chart rendered as Kubernetes objects."""

import os
import subprocess

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "helm", "pgbus")
HELM = os.path.join(ROOT, ".tools", "bin", "helm")
KUBE_VERSION = "1.30.0"
# The one value a release must give: the Secret with the connection strings.
BASE = ["--set", "database.existingSecret=pgbus-db"]


def helm(*args, expect_ok=True):
    if args[0] in ("template", "lint"):
        # helm built by `go install` assumes Kubernetes 1.20 without a cluster.
        args = (*args, "--kube-version", KUBE_VERSION)
    done = subprocess.run([HELM, *args], capture_output=True, text=True)
    if expect_ok and done.returncode != 0:
        raise SystemExit(f"helm {' '.join(args)} failed:\n{done.stderr}")
    return done


def render(*sets):
    out = helm("template", "pgbus", CHART, "--namespace", "bus", *sets).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    return found[0] if found else None
