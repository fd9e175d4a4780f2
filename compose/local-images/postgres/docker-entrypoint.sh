#!/bin/bash
# The part of the official postgres image's entry point that compose.yaml uses:
# on first start, initdb with POSTGRES_USER (superuser), its password from
# POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE, and POSTGRES_DB; then runs
# "postgres ..." as the postgres user, listening on every interface.
set -euo pipefail
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups "$@"; else "$@"; fi; }

if [ "${1:-}" = postgres ]; then
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
  fi
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    pw=${POSTGRES_PASSWORD:-}
    [ -n "${POSTGRES_PASSWORD_FILE:-}" ] && pw=$(cat "$POSTGRES_PASSWORD_FILE")
    if [ -z "$pw" ]; then
      echo "postgres: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE" >&2
      exit 1
    fi
    pwfile=$(mktemp); printf '%s\n' "$pw" >"$pwfile"; chown postgres "$pwfile" 2>/dev/null || true
    as_pg initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --no-locale \
      --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$db" != postgres ]; then
      as_pg psql -v ON_ERROR_STOP=1 -U "$user" -d postgres -qc "CREATE DATABASE \"$db\""
    fi
    as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "postgres: initialised $PGDATA (user $user, database $db)"
  fi
  shift
  exec_cmd=(postgres -c listen_addresses='*' "$@")
  if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${exec_cmd[@]}"
  fi
  exec "${exec_cmd[@]}"
fi
exec "$@"
