#!/bin/sh
# Entry point of the Tessera image.
#   docker-entrypoint.sh SERVICE   runs tessera-SERVICE (ingest, rest, ...)
#   docker-entrypoint.sh CMD ...   runs CMD (a shell, tessera-ingest --help, ...)
#   docker-entrypoint.sh --help    lists every setting
# PGPASSWORD_FILE (e.g. /run/secrets/db_password): the database password is read
# from that file into libpq's PGPASSWORD, so it is in neither the image nor the
# compose file nor TESSERA_DB_URL.
set -eu
if [ -n "${PGPASSWORD_FILE:-}" ]; then
  if [ ! -r "$PGPASSWORD_FILE" ]; then
    echo "docker-entrypoint.sh: PGPASSWORD_FILE=$PGPASSWORD_FILE is not readable" >&2
    exit 2
  fi
  PGPASSWORD=$(cat "$PGPASSWORD_FILE")
  export PGPASSWORD
  unset PGPASSWORD_FILE
fi
if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then
  exec tessera-ingest "$@"
fi
if command -v "tessera-$1" >/dev/null 2>&1; then
  svc=$1; shift
  exec "tessera-$svc" "$@"
fi
exec "$@"
