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
# shellcheck source=../generated.sh
source "$root/sdk/generated.sh"
install_generated "$out/pgbus/v1" "$root/sdk/python/src/pgbus/v1" sdk/python/generate.sh "${1:-}"
