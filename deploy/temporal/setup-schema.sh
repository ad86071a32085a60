#!/bin/sh
# Creates Temporal's two databases on the shared PostgreSQL and brings their schemas up to
# the version of the temporalio/admin-tools image this runs in (keep its tag equal to the
# temporalio/server tag). Safe to run again: that is how a Temporal upgrade gets its
# schema changes. Runs as the one-shot `temporal-schema` service of docker-compose.yml.
#
# temporal-sql-tool reads SQL_PLUGIN, SQL_HOST, SQL_PORT, SQL_USER and SQL_PASSWORD from
# the environment.
set -eu

schema_root=/etc/temporal/schema/postgresql/v12

migrate() {
  db=$1
  dir=$2
  # create-database (connected to the "postgres" database) fails when the database
  # exists, the normal case after the first run; a real failure shows in setup-schema
  if temporal-sql-tool --db "$db" create-database --default-db postgres >/dev/null 2>&1; then
    echo "created database $db"
  fi
  # creates the schema-version bookkeeping on an empty database; a no-op afterwards
  temporal-sql-tool --db "$db" setup-schema -v 0.0
  temporal-sql-tool --db "$db" update-schema -d "$dir"
  echo "schema of $db is current"
}

migrate "${TEMPORAL_DBNAME:-temporal}" "$schema_root/temporal/versioned"
migrate "${TEMPORAL_VISIBILITY_DBNAME:-temporal_visibility}" "$schema_root/visibility/versioned"
