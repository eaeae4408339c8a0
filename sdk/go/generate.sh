#!/usr/bin/env bash
# Generates the Go stubs from proto/ into pgbus/v1 with Debian's protoc and
# the pinned protoc-gen-go and protoc-gen-go-grpc that scripts/deps.sh puts
# in ./.tools/bin. `generate.sh --check` fails when the committed stubs
# differ from what the protos generate (a stale stub is a bug).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
export PATH="$root/.tools/bin:$PATH"
module=github.com/pgbus/pgbus/sdk/go
pkg="$module/pgbus/v1;pgbusv1"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
maps=()
for f in "$root"/proto/pgbus/v1/*.proto; do
  maps+=("--go_opt=Mpgbus/v1/$(basename "$f")=$pkg" "--go-grpc_opt=Mpgbus/v1/$(basename "$f")=$pkg")
done
protoc -I "$root/proto" --go_out="$out" --go_opt=module=$module \
  --go-grpc_out="$out" --go-grpc_opt=module=$module "${maps[@]}" \
  "$root"/proto/pgbus/v1/*.proto
# shellcheck source=../generated.sh
source "$root/sdk/generated.sh"
install_generated "$out/pgbus/v1" "$root/sdk/go/pgbus/v1" sdk/go/generate.sh "${1:-}"
