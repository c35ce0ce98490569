#!/usr/bin/env bash
# Entrypoint of the replica services in docker-compose.yml (image postgres:15). On first start it
# clones the primary with pg_basebackup -R, which writes standby.signal and primary_conninfo
# (with the slot) into the data directory. Then it hands over to the image's own entrypoint,
# which finds an existing data directory and starts the server as a streaming hot standby.
#
# Environment: PRIMARY_HOST, REPLICATION_SLOT, REPLICATION_PASSWORD (required);
#              PRIMARY_PORT (5432), REPLICATION_USER (replicator), PGDATA (image default).
set -Eeuo pipefail

: "${PRIMARY_HOST:?PRIMARY_HOST must be set}"
: "${REPLICATION_SLOT:?REPLICATION_SLOT must be set}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD must be set}"
primary_port="${PRIMARY_PORT:-5432}"
repl_user="${REPLICATION_USER:-replicator}"
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"

# Runs a command as the postgres OS user (the image starts as root; the server must not).
as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    gosu postgres "$@"
  else
    "$@"
  fi
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$PGDATA"
  fi
  chmod 0700 "$PGDATA"
  echo "replica-entrypoint: cloning ${PRIMARY_HOST}:${primary_port} into ${PGDATA} (slot ${REPLICATION_SLOT})"
  # The primary may still be initializing; retry until the clone succeeds.
  until as_postgres env PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup \
      --host="$PRIMARY_HOST" --port="$primary_port" --username="$repl_user" --no-password \
      --pgdata="$PGDATA" --wal-method=stream --checkpoint=fast \
      --slot="$REPLICATION_SLOT" --write-recovery-conf; do
    echo "replica-entrypoint: pg_basebackup failed; retrying in 2s" >&2
    find "$PGDATA" -mindepth 1 -delete
    sleep 2
  done
fi

exec docker-entrypoint.sh "${@:-postgres}"
