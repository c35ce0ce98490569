#!/usr/bin/env bash
# Primary initialization for docker-compose.yml. The postgres image runs this once, from
# /docker-entrypoint-initdb.d, when it creates the data directory. It creates:
#   - the application role and its database (Meridian's [[users]] entry logs in upstream as it),
#   - the replication role and one physical replication slot per replica,
#   - a pg_hba.conf rule for streaming replication (the image's rules cover ordinary
#     connections only).
# The image may source this file instead of running it, so it avoids `set -u` and `exit`.
set -Eeo pipefail

: "${APP_PASSWORD:?APP_PASSWORD must be set}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD must be set}"
app_user="${APP_USER:-app}"
app_db="${APP_DB:-app}"
repl_user="${REPLICATION_USER:-replicator}"
slots="${REPLICATION_SLOTS:-replica1 replica2}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set app_user="$app_user" --set app_password="$APP_PASSWORD" --set app_db="$app_db" \
  --set repl_user="$repl_user" --set repl_password="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE :"repl_user" WITH LOGIN REPLICATION PASSWORD :'repl_password';
CREATE ROLE :"app_user" WITH LOGIN PASSWORD :'app_password';
CREATE DATABASE :"app_db" OWNER :"app_user";
SQL

for slot in $slots; do
  psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set slot="$slot" <<'SQL'
SELECT pg_create_physical_replication_slot(:'slot') \g /dev/null
SQL
done

echo "host replication ${repl_user} all scram-sha-256" >> "$PGDATA/pg_hba.conf"
echo "primary-init: created roles ${app_user} and ${repl_user}, database ${app_db}, slots: ${slots}"
