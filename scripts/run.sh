#!/usr/bin/env bash
# `make run`: serve pgbusd. With PGBUS_DATABASE_URL set, that database is used
# (migrations run with PGBUS_OWNER_DATABASE_URL when given, else with
# PGBUS_DATABASE_URL); otherwise a throwaway cluster is started under ./var/pg.
set -euo pipefail
build=${1:-build}
shift || true
cd "$(dirname "$0")/.."
pgbusd="$build/pgbusd"

if [ -z "${PGBUS_DATABASE_URL:-}" ]; then
  urls=$(bash scripts/pg.sh start var/pg) || { echo "run: could not start Postgres in ./var/pg" >&2; exit 1; }
  eval "$(sed 's/^\([A-Z_]*\)=\(.*\)$/export \1="\2"/' <<<"$urls")"
  echo "run: throwaway Postgres in ./var/pg (stop: scripts/pg.sh stop var/pg)" >&2
fi
PGBUS_DATABASE_URL="${PGBUS_OWNER_DATABASE_URL:-$PGBUS_DATABASE_URL}" "$pgbusd" migrate
# Development: no authentication (pgbusd logs a warning). Production runs
# without --dev-mode and with API keys (README, "Security").
exec "$pgbusd" serve --dev-mode "$@"
