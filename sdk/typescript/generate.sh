#!/usr/bin/env bash
# Generates the TypeScript stubs from proto/ into src/gen with Debian's
# protoc and the pinned ts-proto from node_modules (npm ci). `generate.sh
# --check` fails when the committed stubs differ from what the protos
# generate (a stale stub is a bug).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
plugin="$here/node_modules/.bin/protoc-gen-ts_proto"
[ -x "$plugin" ] || { echo "run npm ci in sdk/typescript first (scripts/deps.sh does)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
protoc -I "$root/proto" --plugin=protoc-gen-ts_proto="$plugin" --ts_proto_out="$out" \
  --ts_proto_opt=outputServices=grpc-js,env=node,esModuleInterop=true \
  "$root"/proto/pgbus/v1/*.proto
# shellcheck source=../generated.sh
source "$root/sdk/generated.sh"
install_generated "$out" "$here/src/gen" sdk/typescript/generate.sh "${1:-}"
