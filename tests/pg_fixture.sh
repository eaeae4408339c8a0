#!/usr/bin/env bash
# CTest fixture: a fresh throwaway cluster for one test run, migrated by the
# real migrator (`pgbusd migrate`).
#   pg_fixture.sh start DIR PGBUSD | stop DIR
set -euo pipefail
cmd=$1
dir=$(realpath -m "$2")
root="$(cd "$(dirname "$0")/.." && pwd)"
case "$cmd" in
start)
  bash "$root/scripts/pg.sh" stop "$dir" || true
  rm -rf "$dir"
  bash "$root/scripts/pg.sh" start "$dir" >/dev/null
  PGBUS_DATABASE_URL="host=$dir/run dbname=pgbus user=pgbus_owner" "$3" migrate
  ;;
stop)
  bash "$root/scripts/pg.sh" stop "$dir"
  rm -rf "$dir"
  ;;
esac
