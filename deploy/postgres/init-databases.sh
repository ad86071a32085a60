#!/bin/sh
# First start of an empty PostgreSQL volume only (docker-entrypoint-initdb.d): a role and
# database for ridehail, and a role for Temporal, which creates its own two databases
# (deploy/temporal/setup-schema.sh). Passwords come from the container's environment.
set -eu

psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v app_password="$APP_DB_PASSWORD" -v temporal_password="$TEMPORAL_DB_PASSWORD" <<'SQL'
CREATE ROLE ridehail LOGIN PASSWORD :'app_password';
CREATE DATABASE ridehail OWNER ridehail;
CREATE ROLE temporal LOGIN CREATEDB PASSWORD :'temporal_password';
SQL
