#!/usr/bin/env bash
# First start: initdb, password auth from the container network, POSTGRES_USER/DB made. Then postgres.
set -euo pipefail
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=${POSTGRES_USER}}"
if [[ -z "${POSTGRES_PASSWORD:-}" ]]; then
    echo "postgres-entrypoint: POSTGRES_PASSWORD is empty; set it (docker/.env.example says how)" >&2
    exit 1
fi
if [[ ! -s "${PGDATA}/PG_VERSION" ]]; then
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD}" > "${pwfile}"
    initdb --username="${POSTGRES_USER}" --pwfile="${pwfile}" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 -D "${PGDATA}" > /dev/null
    rm -f "${pwfile}"
    echo "host all all all scram-sha-256" >> "${PGDATA}/pg_hba.conf"
    if [[ "${POSTGRES_DB}" != "postgres" ]]; then
        pg_ctl -D "${PGDATA}" -o "-c listen_addresses=''" -w start > /dev/null
        createdb --username="${POSTGRES_USER}" "${POSTGRES_DB}"
        pg_ctl -D "${PGDATA}" -m fast -w stop > /dev/null
    fi
fi
exec postgres -D "${PGDATA}" -c listen_addresses='*' "$@"
