"""The Helm chart (helm/pgbus), without a cluster: it lints, renders into
manifests that Kubernetes' schemas accept, its values schema rejects wrong
types, and every setting of `pgbusd serve --help` can be set from values
with pgbusd's own default.

usage: chart_test.py PGBUSD   (helm from ./.tools/bin, kubernetes-validate
from ./.venv: scripts/deps.sh installs both)"""

import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

from chart_lib import BASE, CHART, KUBE_VERSION, ROOT, by_kind, helm, render

VALIDATE = os.path.join(ROOT, ".venv", "bin", "kubernetes-validate")
EVERYTHING = BASE + [
    "--set", "tls.existingSecret=pgbus-tls", "--set", "tls.clientCa=true",
    "--set", "autoscaling.enabled=true", "--set", "networkPolicy.enabled=true",
    "--set", "networkPolicy.from[0].podSelector.matchLabels.role=client",
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "smokeTest.apiKeySecret=pgbus-smoke",
]
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


# 1. Lint, and manifests Kubernetes accepts.
lint = helm("lint", CHART, "--strict", *BASE, expect_ok=False)
check(lint.returncode == 0, f"helm lint: {lint.stdout}{lint.stderr}")
for name, sets in (("defaults", BASE), ("everything on", EVERYTHING)):
    # prometheus-operator's ServiceMonitor is a CRD: no schema to check here.
    docs = [d for d in render(*sets) if d["kind"] != "ServiceMonitor"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(docs, f)
    v = subprocess.run([VALIDATE, "--kubernetes-version", KUBE_VERSION, "--strict", f.name],
                       capture_output=True, text=True)
    check(v.returncode == 0, f"kubernetes-validate ({name}): {v.stdout}{v.stderr}")
    os.unlink(f.name)

# 2. Wrong values are refused, with a message.
for bad in (["--set", "replicaCount=two"], ["--set", "config.workers=many"],
            ["--set", "config.wrokers=8"], ["--set", "service.port=70000"],
            ["--set-json", "config.devMode=\"yes\""]):
    done = helm("template", "pgbus", CHART, *BASE, *bad, expect_ok=False)
    check(done.returncode != 0 and "values don't meet the specifications of the schema"
          in done.stderr, f"the schema accepted {bad}")
done = helm("template", "pgbus", CHART, expect_ok=False)
check(done.returncode != 0 and "database.existingSecret" in done.stderr,
      "a release without database.existingSecret rendered")

# 3. The shape operators check: rolling updates never below the count,
# hardened pods, gRPC probes, the migration hook as the schema owner.
docs = render(*EVERYTHING)
deploy = by_kind(docs, "Deployment")
check(deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, "maxUnavailable is not 0")
pod = deploy["spec"]["template"]["spec"]
c = pod["containers"][0]
check(pod["securityContext"]["runAsNonRoot"] is True, "pods may run as root")
check(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", "no seccomp profile")
check(c["securityContext"]["readOnlyRootFilesystem"] is True, "the root filesystem is writable")
check(c["securityContext"]["capabilities"]["drop"] == ["ALL"], "capabilities are not dropped")
check(c["securityContext"]["allowPrivilegeEscalation"] is False, "privilege escalation allowed")
for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
    check("grpc" in c.get(probe, {}), f"{probe} is not a gRPC probe")
check(c["livenessProbe"]["grpc"].get("service") == "liveness",
      "liveness would follow readiness (NOT_SERVING while draining)")
values = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
grace = pod["terminationGracePeriodSeconds"]
check(grace >= values["preStopDelaySeconds"] + values["config"]["shutdownGraceMs"] / 1000,
      f"terminationGracePeriodSeconds {grace} is shorter than preStop + shutdown grace")
check(c["lifecycle"]["preStop"]["sleep"]["seconds"] == values["preStopDelaySeconds"], "no preStop delay")
env = {e["name"]: e for e in c.get("env", [])}
check(env["PGBUS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "app-url",
      "pgbusd does not connect as the app role")
job = by_kind(docs, "Job")
check("pre-install" in job["metadata"]["annotations"]["helm.sh/hook"]
      and "pre-upgrade" in job["metadata"]["annotations"]["helm.sh/hook"], "migrations are not a hook")
jenv = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
check(jenv["PGBUS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "owner-url",
      "migrations do not run as the schema owner")
svc = by_kind(docs, "Service")
check(svc["spec"]["ports"][0].get("appProtocol") == "grpc", "the Service port is not appProtocol grpc")
check([p["name"] for p in svc["spec"]["ports"]] == ["grpc", "metrics"], "no metrics port")
monitor = by_kind(docs, "ServiceMonitor")
check(monitor is not None and monitor["spec"]["endpoints"][0]["port"] == "metrics",
      "no ServiceMonitor scraping the metrics port when enabled")
smoke = [d for d in docs if d["kind"] == "Pod"]
check(len(smoke) == 1 and smoke[0]["metadata"]["annotations"]["helm.sh/hook"] == "test",
      "no helm test Pod")
if smoke:
    args = [c["args"] for c in smoke[0]["spec"]["containers"]]
    check(any("grpc.health.v1.Health/Check" in a for a in args), "the smoke test checks no health")
    check(any("pgbus.v1.AdminService/ListTopics" in a for a in args),
          "the smoke test makes no authenticated call with smokeTest.apiKeySecret")
    check(all("-insecure" in a for a in args), "the smoke test speaks plaintext to a TLS Service")
for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"):
    check(by_kind(docs, kind) is not None, f"no {kind} when enabled")
check(not any("password" in json.dumps(d).lower() for d in docs), "a password in the manifests")

# 4. Every pgbusd setting can be set, with pgbusd's default. The port file
# and the config file are for local runs; the database URL and the TLS
# files come from Secrets.
helptext = subprocess.run([sys.argv[1], "serve", "--help"], capture_output=True, text=True)
helptext = helptext.stdout + helptext.stderr
settings = dict(re.findall(r"\((PGBUS_[A-Z0-9_]+)\).*\[(.*)\]\s*$", helptext, re.M))
check(len(settings) >= 20, f"read only {len(settings)} settings from pgbusd --help")
cm = by_kind(docs, "ConfigMap")["data"]
chart_env = set(cm) | set(env)
for name in sorted(set(settings) - {"PGBUS_PORT_FILE", "PGBUS_CONFIG"}):
    check(name in chart_env, f"{name} (pgbusd --help) cannot be set from the chart")
defaults = by_kind(render(*BASE), "ConfigMap")["data"]
for key in values["config"]:
    name = "PGBUS_" + re.sub(r"([A-Z])", r"_\1", key).upper()
    check(name in settings, f"config.{key} is no pgbusd setting ({name})")
    if name in settings:
        check(defaults.get(name) == settings[name],
              f"config.{key}: the chart's default {defaults.get(name)!r} is not pgbusd's "
              f"{settings[name]!r}")

print(f"chart: {len(failures)} failures" if failures else "chart: ok")
sys.exit(1 if failures else 0)
