#!/usr/bin/env bash
# Generates the Python stubs from proto/ into src/pgbus/v1 with the pinned
# grpcio-tools of ./.venv. `generate.sh --check` fails when the committed
# stubs differ from what the protos generate (a stale stub is a bug).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="$root/.venv/bin/python"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$python" -m grpc_tools.protoc -I "$root/proto" --python_out="$out" --pyi_out="$out" \
  --grpc_python_out="$out" "$root"/proto/pgbus/v1/*.proto
touch "$out/pgbus/v1/__init__.py"
dest="$root/sdk/python/src/pgbus/v1"
if [ "${1:-}" = "--check" ]; then
  if ! diff -r "$out/pgbus/v1" "$dest" >/dev/null; then
    echo "sdk/python/src/pgbus/v1 is stale: run sdk/python/generate.sh and commit the result" >&2
    diff -r "$out/pgbus/v1" "$dest" | head -20 >&2
    exit 1
  fi
  exit 0
fi
rm -rf "$dest"
cp -r "$out/pgbus/v1" "$dest"
