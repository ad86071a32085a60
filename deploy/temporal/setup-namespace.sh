#!/bin/sh
# Waits until the Temporal frontend is SERVING, creates ridehail's namespace if it is
# missing, and registers the search attributes RideWorkflow keeps current (CONTRACT.md
# section 4): RideStatus, RiderId, DriverId, all Keyword. Safe to run again. Runs as the
# one-shot `temporal-setup` service of docker-compose.yml; works as well against any
# Temporal cluster the `temporal` CLI can reach.
#
#   TEMPORAL_ADDRESS    host:port of the frontend (read by the temporal CLI)
#   TEMPORAL_NAMESPACE  the namespace ridehail uses (RIDEHAIL_TEMPORAL_NAMESPACE)
#   NAMESPACE_RETENTION how long closed ride histories are kept (default 7d)
#   SETUP_TIMEOUT_S     how long to wait for the server (default 300)
set -eu

: "${TEMPORAL_ADDRESS:?set TEMPORAL_ADDRESS to the Temporal frontend, host:port}"
ns=${TEMPORAL_NAMESPACE:-default}
retention=${NAMESPACE_RETENTION:-7d}
deadline=$(( $(date +%s) + ${SETUP_TIMEOUT_S:-300} ))
attributes="RideStatus RiderId DriverId"

# Run "$@" until it succeeds or the deadline passes.
retry() {
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "gave up after ${SETUP_TIMEOUT_S:-300}s: $*" >&2
      return 1
    fi
    sleep 2
  done
}

serving() {
  temporal operator cluster health 2>/dev/null | grep -q SERVING
}

ensure_namespace() {
  temporal operator namespace describe --namespace "$ns" >/dev/null 2>&1 \
    || temporal operator namespace create --namespace "$ns" --retention "$retention"
}

missing_attributes() {
  listed=$(temporal operator search-attribute list --namespace "$ns" 2>/dev/null)
  for name in $attributes; do
    printf '%s\n' "$listed" | grep -qw "$name" || printf '%s ' "$name"
  done
}

ensure_attributes() {
  missing=$(missing_attributes) || return 1
  [ -z "$missing" ] && return 0
  set --
  for name in $missing; do
    set -- "$@" --name "$name"
  done
  # a namespace created a moment ago can be unknown to this call for a few seconds
  temporal operator search-attribute create --namespace "$ns" "$@" --type Keyword || return 1
  [ -z "$(missing_attributes)" ]
}

retry serving
echo "Temporal at $TEMPORAL_ADDRESS is serving"
retry ensure_namespace
echo "namespace $ns is registered"
retry ensure_attributes
echo "search attributes $attributes (Keyword) are registered in $ns"
