#!/usr/bin/env bash
# Installs (if missing) and starts Debian's PostgreSQL on loopback, with a `den` role that may
# create databases. Prints the admin URL the tests use as DEN_TEST_POSTGRES_URL. Idempotent.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "postgres.sh: installing Debian's postgresql package" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q "^$version main"; then
  pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main"{print $4}' | grep -q online; then
  pg_ctlcluster "$version" main start >&2
fi
for _ in $(seq 1 50); do
  su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.2
done
su postgres -c "psql -qtAc \"select 1 from pg_roles where rolname='den'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"create role den login createdb password 'den'\"" >&2
su postgres -c "psql -qtAc \"select 1 from pg_database where datname='den'\"" | grep -q 1 ||
  su postgres -c "createdb -O den den" >&2
port=$(su postgres -c "psql -qtAc 'show port'")
echo "postgres://den:den@127.0.0.1:${port}/den"
