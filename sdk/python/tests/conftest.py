"""A real pgbusd on the throwaway Postgres that ctest's fixture started
(PGBUS_TEST_PG_DIR), one per test, each with a tenant of its own."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

import pgbus

PGBUSD = os.environ.get("PGBUSD", "")
PG_DIR = os.environ.get("PGBUS_TEST_PG_DIR", "")


def dsn(user: str) -> str:
    return f"host={PG_DIR}/run dbname=pgbus user={user}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """pgbusd serving on 127.0.0.1:<port>; dev mode with its own tenant
    unless `auth` (then API keys are checked)."""

    def __init__(self, auth: bool = False, tenant: str = "", port: int = 0, args=()):
        self.tenant = tenant or f"py-{uuid.uuid4().hex[:12]}"
        self.port = port or free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.auth = auth
        self.args = list(args)  # more flags (TLS files, say)
        self.log = tempfile.NamedTemporaryFile(prefix="pgbusd-", suffix=".log", delete=False)
        self.proc = None
        self.start()

    def start(self) -> None:
        args = [PGBUSD, "serve", "--listen", self.target, "--poll-interval-ms", "100", *self.args]
        if not self.auth:
            args += ["--dev-mode", "--default-tenant", self.tenant]
        env = dict(os.environ, PGBUS_DATABASE_URL=dsn("pgbus_app"))
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=self.log)
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"pgbusd exited; log: {self.log.name}")
                time.sleep(0.05)
        raise RuntimeError(f"pgbusd did not start; log: {self.log.name}")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def client(self, **kwargs) -> pgbus.Client:
        return pgbus.Client(self.target, **kwargs)


def operator(*args: str) -> str:
    """`pgbusd <args>` with the schema owner's connection string; stdout."""
    env = dict(os.environ, PGBUS_DATABASE_URL=dsn("pgbus_owner"))
    done = subprocess.run([PGBUSD, *args], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def sql(tenant: str, statement: str) -> str:
    """Runs SQL as the schema owner with the tenant set; the first value."""
    script = f"SELECT set_config('pgbus.tenant_id', '{tenant}', false);\n{statement}"
    done = subprocess.run(["psql", dsn("pgbus_owner"), "-qAtX", "-v", "ON_ERROR_STOP=1"],
                          input=script, capture_output=True, text=True, check=True)
    lines = done.stdout.strip().splitlines()
    return lines[-1] if len(lines) > 1 else ""


def run_readme_block(server: Server, pick) -> dict:
    """Runs the first ```python block of sdk/python/README.md for which
    pick(code) holds, with $PGBUS_SERVER naming `server`; its globals."""
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    code = next(b for b in blocks if pick(b))
    os.environ["PGBUS_SERVER"] = server.target
    try:
        scope: dict = {}
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 -- our own README
    finally:
        del os.environ["PGBUS_SERVER"]
    return scope


@pytest.fixture
def server():
    if not PGBUSD or not PG_DIR:
        pytest.fail("run through ctest: PGBUSD and PGBUS_TEST_PG_DIR are not set")
    s = Server()
    yield s
    s.stop(signal.SIGKILL)


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c
