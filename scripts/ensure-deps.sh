#!/usr/bin/env bash
# Installs what Meridian's demo and tests need on a fresh Debian/Ubuntu machine:
# PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup), psql and pgbench.
set -euo pipefail

have_pg() {
  command -v pg_ctl >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1
}

if have_pg && command -v psql >/dev/null 2>&1 && command -v pgbench >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "ensure-deps: installing PostgreSQL from the distribution's packages" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq postgresql postgresql-contrib >/dev/null
# The packaged cluster is not needed (Meridian's tests start their own); stop it so its port is free.
if command -v pg_ctlcluster >/dev/null 2>&1; then
  $SUDO service postgresql stop >/dev/null 2>&1 || true
fi
have_pg || { echo "ensure-deps: PostgreSQL installation failed" >&2; exit 1; }
