#!/usr/bin/env bash
# `make bench`: a fresh throwaway Postgres under BUILD/benchpg, pgbusd on a
# free loopback port, then bench/pgbus_bench against it.
set -euo pipefail
build=$(realpath "${1:-build}")
cd "$(dirname "$0")/.."
dir="$build/benchpg"
# One bench at a time: a second one would restart and then stop the same
# cluster under the first, which then measures nothing, silently.
mkdir -p "$build"
exec 9>"$build/benchpg.lock"
flock -n 9 || { echo "bench: another bench is running on $dir; wait for it" >&2; exit 1; }
bash tests/pg_fixture.sh start "$dir" "$build/pgbusd" >/dev/null 2>&1
port_file="$dir/port"
rm -f "$port_file"
# As in production: authentication on, one tenant with an API key.
owner="host=$dir/run dbname=pgbus user=pgbus_owner"
PGBUS_DATABASE_URL="$owner" "$build/pgbusd" tenant create bench 2>/dev/null
PGBUS_API_KEY=$(PGBUS_DATABASE_URL="$owner" "$build/pgbusd" key issue bench \
  --scopes publish,subscribe,admin 2>/dev/null)
export PGBUS_API_KEY
PGBUS_DATABASE_URL="host=$dir/run dbname=pgbus user=pgbus_app" \
  "$build/pgbusd" serve --listen 127.0.0.1:0 --port-file "$port_file" 2>"$dir/pgbusd.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; bash tests/pg_fixture.sh stop "$dir"' EXIT
for _ in $(seq 100); do [ -s "$port_file" ] && break; sleep 0.1; done
# Each SDK's bench program (issue 11), the C++ one first: the reference.
(cd sdk/go && go build -o "$build/pgbus_go_bench" ./bench)
(cd sdk/typescript && npx tsc -p .)
sdks=(--sdk "C++=$build/bench/pgbus_sdk_bench"
      --sdk "Python=$PWD/.venv/bin/python $PWD/sdk/python/bench.py"
      --sdk "Go=$build/pgbus_go_bench"
      --sdk "TypeScript=node $PWD/sdk/typescript/dist/bench/bench.js")
"$build/bench/pgbus_bench" --target "127.0.0.1:$(cat "$port_file")" "${sdks[@]}" \
  --owner-dsn "host=$dir/run dbname=pgbus user=pgbus_owner" --pgbusd-pid "$pid" \
  --pgbench "$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)/pgbench" \
  --work-dir "$dir" "${@:2}"
