#!/usr/bin/env bash
# The stand-in's /entrypoint: the part of the official image's entrypoint the compose file uses.
#   bash ... | python ...   -> that program
#   airflow <args> | <args> -> airflow <args>   (e.g. `scheduler`, `celery worker`, `api-server`)
# Before an airflow command it waits for the metadata database (CONNECTION_CHECK_MAX_COUNT tries,
# 0 skips) and, with _AIRFLOW_DB_MIGRATE=true, runs `airflow db migrate`.
set -euo pipefail
umask 0002

wait_for_db() {
    local tries="${CONNECTION_CHECK_MAX_COUNT:-20}" pause="${CONNECTION_CHECK_SLEEP_TIME:-3}" i
    for ((i = 1; i <= tries; i++)); do
        if airflow db check > /dev/null 2>&1; then
            return 0
        fi
        echo "entrypoint: the metadata database does not answer yet (try ${i}/${tries})" >&2
        sleep "${pause}"
    done
    if (( tries > 0 )); then
        echo "entrypoint: the metadata database did not answer after ${tries} tries; check the" \
            "host, port and credentials in AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" >&2
        exit 1
    fi
}

case "${1:-}" in
    bash | python | python3) exec "$@" ;;
    "") exec bash ;;
    airflow) shift ;;
esac
if [[ "${1:-}" != "version" || "${_AIRFLOW_DB_MIGRATE:-}" == "true" ]]; then
    wait_for_db
fi
if [[ "${_AIRFLOW_DB_MIGRATE:-}" == "true" ]]; then
    airflow db migrate
fi
exec airflow "$@"
