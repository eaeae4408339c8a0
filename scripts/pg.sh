#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster in a directory, reachable only through a
# Unix socket inside it (no TCP port to collide with).
#
#   scripts/pg.sh start DIR   initdb if needed, start, create the pgbus roles
#                             and database; prints the two connection strings
#   scripts/pg.sh stop DIR    stop it (the files stay; rm -rf DIR to forget)
#
# Roles: pgbus_owner owns the schema and runs migrations; pgbus_app is what
# pgbusd connects as: it owns nothing and cannot bypass row-level security.
# initdb refuses to run as root, so as root the cluster runs as `postgres`.
set -euo pipefail
cmd=${1:?usage: pg.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: pg.sh start|stop DIR}")
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
data="$dir/data"
sock="$dir/run"

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
  mkdir -p "$dir" "$sock"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir" "$sock"
  if [ ! -s "$data/PG_VERSION" ]; then
    as_pg "$PGBIN/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    as_pg tee -a "$data/postgresql.conf" >/dev/null <<CONF
listen_addresses = ''
unix_socket_directories = '$sock'
max_connections = 200
shared_buffers = 256MB
default_toast_compression = lz4
idle_in_transaction_session_timeout = '60s'
log_min_messages = warning
CONF
  fi
  if ! as_pg "$PGBIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$PGBIN/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 start >/dev/null \
      || { tail -20 "$dir/postgres.log" >&2; exit 1; }
  fi
  # Running but unreachable (its socket file was removed, say): restart.
  if ! "$PGBIN/pg_isready" -q -h "$sock" -t 5; then
    echo "pg.sh: the cluster in $dir does not answer on $sock; restarting it" >&2
    as_pg "$PGBIN/pg_ctl" -D "$data" -l "$dir/postgres.log" -m fast -w -t 60 restart >/dev/null \
      || { tail -20 "$dir/postgres.log" >&2; exit 1; }
  fi
  psql_su() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -U postgres -d postgres "$@"; }
  psql_su <<'SQL'
SELECT 'CREATE ROLE pgbus_owner LOGIN NOSUPERUSER NOBYPASSRLS'
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgbus_owner') \gexec
SELECT 'CREATE ROLE pgbus_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE'
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgbus_app') \gexec
SELECT 'CREATE DATABASE pgbus OWNER pgbus_owner'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'pgbus') \gexec
SQL
  echo "PGBUS_OWNER_DATABASE_URL=host=$sock dbname=pgbus user=pgbus_owner"
  echo "PGBUS_DATABASE_URL=host=$sock dbname=pgbus user=pgbus_app"
  ;;
stop)
  if [ -s "$data/PG_VERSION" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  ;;
*)
  echo "usage: pg.sh start|stop DIR" >&2; exit 2 ;;
esac
