"""The chart boots the server (issue 12): the migrations Job and the
Deployment rendered by helm/pgbus are run as Kubernetes would run them --
their args, their environment with the ConfigMap and the Secrets resolved,
nothing else -- with pgbusd against the throwaway Postgres; the probes'
health services must answer SERVING on the probes' port, /metrics must
serve on the metrics port, and SIGTERM must end pgbusd within the pod's
termination grace period.

usage: chart_boot_test.py PGBUSD   (PGBUS_TEST_PG_DIR: ctest's Postgres;
helm and grpcurl from ./.tools, scripts/deps.sh installs them)"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from chart_lib import BASE, ROOT, by_kind, render

PGBUSD = sys.argv[1]
PG_DIR = os.environ["PGBUS_TEST_PG_DIR"]
GRPCURL = os.path.join(ROOT, ".tools", "bin", "grpcurl")
DATABASE = "pgbus_chart_boot"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dsn(user, database=DATABASE):
    return f"host={PG_DIR}/run dbname={database} user={user}"


def psql(database, user, sql):
    done = subprocess.run(["psql", dsn(user, database), "-qAtX", "-v", "ON_ERROR_STOP=1",
                           "-c", sql], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def environment(container, configmaps, secrets):
    """The container's environment as the kubelet builds it."""
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]])
        if "secretRef" in source:
            env.update(secrets[source["secretRef"]["name"]])
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        ref = e["valueFrom"]
        if "secretKeyRef" in ref:
            env[e["name"]] = secrets[ref["secretKeyRef"]["name"]][ref["secretKeyRef"]["key"]]
        elif "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            env[e["name"]] = configmaps[r["name"]][r["key"]]
        else:
            raise SystemExit(f"env {e['name']}: a source this test cannot resolve: {ref}")
    return env


def command(container):
    # The image's entrypoint is pgbusd (Dockerfile); the chart gives args.
    if container.get("command"):
        raise SystemExit(f"the chart overrides the entrypoint: {container['command']}")
    return [PGBUSD, *container.get("args", [])]


def health(port, service):
    out = subprocess.run([GRPCURL, "-plaintext", "-max-time", "2", "-d",
                          f'{{"service":"{service}"}}', f"127.0.0.1:{port}",
                          "grpc.health.v1.Health/Check"], capture_output=True, text=True)
    return out.stdout + out.stderr


grpc_port, metrics_port = free_port(), free_port()
docs = render(*BASE, "--set", f"service.port={grpc_port}", "--set",
              f"metrics.port={metrics_port}")
configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
# The Secret the release names (database.existingSecret), as its README
# says to create it: the owner's and the app role's connection strings.
secrets = {"pgbus-db": {"owner-url": dsn("pgbus_owner"), "app-url": dsn("pgbus_app")}}
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


psql("postgres", "postgres", f"DROP DATABASE IF EXISTS {DATABASE}")
psql("postgres", "postgres", f"CREATE DATABASE {DATABASE} OWNER pgbus_owner")

# 1. The migrations Job, on an empty database.
job = by_kind(docs, "Job")["spec"]["template"]["spec"]["containers"][0]
done = subprocess.run(command(job), env=environment(job, configmaps, secrets),
                      capture_output=True, text=True, timeout=120)
check(done.returncode == 0, f"the migrations Job failed: {done.stderr}")
migrations = len([f for f in os.listdir(os.path.join(ROOT, "migrations"))
                  if f.endswith(".sql")])
applied = psql(DATABASE, "pgbus_owner", "SELECT count(*) FROM pgbus.schema_migrations")
check(applied == str(migrations), f"the Job applied {applied} of {migrations} migrations")

# 2. The Deployment's pgbusd.
container = by_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
pod = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
check(ports == {"grpc": grpc_port, "metrics": metrics_port}, f"container ports {ports}")
log = open(os.path.join(PG_DIR, "chart-boot-pgbusd.log"), "w")
proc = subprocess.Popen(command(container), env=environment(container, configmaps, secrets),
                        stdout=log, stderr=log)
try:
    startup = container["startupProbe"]
    started = False
    # As the kubelet would: the startup probe until it passes, within its budget.
    for _ in range(startup["failureThreshold"]):
        if '"SERVING"' in health(startup["grpc"]["port"], startup["grpc"].get("service", "")):
            started = True
            break
        time.sleep(min(startup["periodSeconds"], 0.5))
    check(started, "the startup probe never passed")
    for probe in ("readinessProbe", "livenessProbe"):
        g = container[probe]["grpc"]
        out = health(g["port"], g.get("service", ""))
        check('"SERVING"' in out, f"{probe} (service {g.get('service', '')!r}): {out}")
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        body = r.read().decode()
        check(r.status == 200 and "pgbus_rpc_requests_total" in body,
              "no pgbus metrics on the metrics port")

    # 3. A rolling update's end: SIGTERM, done within the grace period.
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(pod["terminationGracePeriodSeconds"])
        check(rc == 0, f"pgbusd exited {rc} on SIGTERM")
    except subprocess.TimeoutExpired:
        check(False, "pgbusd outlived terminationGracePeriodSeconds")
finally:
    proc.kill()
    proc.wait()
    log.close()
    psql("postgres", "postgres", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")

print(f"chart boot: {len(failures)} failures" if failures else "chart boot: ok")
sys.exit(1 if failures else 0)
