"""README's grpcurl session, run (issue 12): every `$ grpcurl ...` command of
the "A grpcurl session" section is run against a fresh pgbusd (dev mode, a
tenant of its own) and its output compared with the README's, with times,
message ids and ack ids masked; ids the README shows are replaced in later
commands by the ones this run got. So the README cannot drift from the
server.

usage: readme_grpcurl_test.py PGBUSD   (PGBUS_TEST_PG_DIR: ctest's Postgres;
grpcurl from ./.tools, scripts/deps.sh installs it)"""

import os
import re
import shlex
import socket
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRPCURL = os.path.join(ROOT, ".tools", "bin", "grpcurl")
PG_DIR = os.environ["PGBUS_TEST_PG_DIR"]

# What differs from run to run, in the order a value is found.
VARYING = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "<time>"),
    (re.compile(r"\b\d+-\d+-[0-9a-f]{16}\b"), "<ack id>"),
    (re.compile(r'(?<=("id"|_id"): ")\d+(?=")'), "<id>"),
    (re.compile(r'(?<=message_ids": \[\n    ")\d+(?=")'), "<id>"),
    # grpcurl words -max-time's end two ways, by which side saw it first.
    (re.compile(r"(?<=Code: DeadlineExceeded\n  Message: ).*"), "<deadline>"),
]


def mask(text):
    for pattern, stand_in in VARYING:
        text = pattern.sub(stand_in, text)
    return text


def values(text):
    """The varying values of `text`, in order (ack ids, then ids)."""
    return [m.group(0) for pattern, _ in VARYING[1:4] for m in pattern.finditer(text)]


def session(readme):
    """(command, expected output) of each `$ grpcurl` line of the section."""
    section = readme.split("## A grpcurl session", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        for part in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = part.partition("\n")
            yield command, output.strip("\n")


def main():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tenant = f"readme-{uuid.uuid4().hex[:12]}"
    env = dict(os.environ,
               PGBUS_DATABASE_URL=f"host={PG_DIR}/run dbname=pgbus user=pgbus_app")
    log = open(os.path.join(PG_DIR, "readme-grpcurl-pgbusd.log"), "w")
    server = subprocess.Popen([sys.argv[1], "serve", "--listen", f"127.0.0.1:{port}",
                               "--dev-mode", "--default-tenant", tenant],
                              env=env, stdout=log, stderr=log)
    failures = 0
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        readme = open(os.path.join(ROOT, "README.md")).read()
        learned = {}  # a value the README shows -> this run's
        commands = list(session(readme))
        if len(commands) < 8:
            print(f"FAIL: found only {len(commands)} commands in README's grpcurl session")
            return 1
        for command, expected in commands:
            for shown, got in learned.items():
                command = command.replace(f'"{shown}"', f'"{got}"')
            args = shlex.split(command.replace("localhost:50051", f"127.0.0.1:{port}"))
            assert args[0] == "grpcurl", command
            done = subprocess.run([GRPCURL, *args[1:]], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=30)
            actual = done.stdout.strip("\n")
            if mask(actual) != mask(expected):
                failures += 1
                print(f"FAIL: $ {command}\n--- README\n{expected}\n--- got\n{actual}\n")
                continue
            learned.update(zip(values(expected), values(actual)))
    finally:
        server.kill()
        server.wait()
        log.close()
    print(f"README grpcurl session: {failures} failures" if failures
          else f"README grpcurl session: {len(commands)} commands as shown")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
