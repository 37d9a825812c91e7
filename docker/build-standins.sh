#!/usr/bin/env bash
# Build LOCAL STAND-INS for the three base images docker/docker-compose.yaml uses, from Debian
# packages and pip only, for machines that cannot pull from a container registry:
#
#   parallelrun-standin/debian:bookworm            debootstrap of Debian bookworm, `docker import`ed
#   parallelrun-standin/airflow:3.3.2-python3.11   Python (Debian's) + pip's apache-airflow, laid out
#                                                  as the official apache/airflow image (standins/airflow.Dockerfile)
#   parallelrun-standin/postgres:15-bookworm       Debian's postgresql-15
#   parallelrun-standin/redis:7-bookworm           Debian's redis-server
#
# They are NOT the official images; docker/docker-compose.standins.yaml points the stack at them.
# Each image is also tagged `inputs-<hash>` of what it is built from (its Dockerfile, files,
# build arguments and base): when that tag exists the image is not built again.
#
# Needs: docker (a running daemon), debootstrap, root (debootstrap), the host's CA bundle
# ($PIP_CERT, else /etc/ssl/certs/ca-certificates.crt) for pip inside the build.
# Environment: AIRFLOW_VERSION (3.3.2), DEBIAN_MIRROR (http://deb.debian.org/debian).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "${HERE}")"
AIRFLOW_VERSION="${AIRFLOW_VERSION:-3.3.2}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA_BUNDLE="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
SUITE=bookworm
PYTHON_VERSION=3.11 # Debian bookworm's python3
DEBIAN_IMAGE="parallelrun-standin/debian:${SUITE}"
AIRFLOW_IMAGE="parallelrun-standin/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}"
POSTGRES_IMAGE="parallelrun-standin/postgres:15-${SUITE}"
REDIS_IMAGE="parallelrun-standin/redis:7-${SUITE}"

say() { printf 'build-standins: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

command -v docker > /dev/null || die "no docker client on PATH; install Debian's docker.io"
docker info > /dev/null 2>&1 || die "the Docker daemon does not answer (docker info failed); start dockerd"
[[ -r "${CA_BUNDLE}" ]] || die "CA bundle ${CA_BUNDLE} is not readable; set PIP_CERT to the host's CA bundle"

# hash_of <text> <file>...: a short sha256 of the text and the files' contents.
hash_of() {
    local text="$1"
    shift
    { printf '%s\n' "${text}"; cat "$@"; } | sha256sum | cut -c1-16
}

# have <image> <hash>: the image was built from these inputs already.
have() { docker image inspect "${1%%:*}:inputs-$2" > /dev/null 2>&1; }

build_debian() {
    local hash rootfs
    hash="$(hash_of "debootstrap minbase ${SUITE} ${DEBIAN_MIRROR} ca-certificates" /dev/null)"
    if have "${DEBIAN_IMAGE}" "${hash}"; then
        say "${DEBIAN_IMAGE} is up to date (inputs-${hash})"
    else
        command -v debootstrap > /dev/null || die "debootstrap is missing: apt-get install debootstrap"
        [[ "$(id -u)" == 0 ]] || die "debootstrap needs root"
        rootfs="$(mktemp -d /var/tmp/parallelrun-standin-rootfs.XXXXXX)"
        trap 'rm -rf "${rootfs}"' RETURN
        say "debootstrap ${SUITE} into ${rootfs}"
        debootstrap --variant=minbase --include=ca-certificates "${SUITE}" "${rootfs}" "${DEBIAN_MIRROR}" \
            > "${rootfs}.log" 2>&1 || { tail -20 "${rootfs}.log" >&2; die "debootstrap failed (log above)"; }
        rm -f "${rootfs}.log"
        rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/lib/apt/lists/*
        tar -C "${rootfs}" -c . | docker import --change 'CMD ["/bin/bash"]' - "${DEBIAN_IMAGE}" > /dev/null
        docker tag "${DEBIAN_IMAGE}" "${DEBIAN_IMAGE%%:*}:inputs-${hash}"
    fi
    BASE_HASH="${hash}"
}

# build_image <image> "<files of standins/ it is built from>" <extra build args...>: build from a
# context of those files (the first is the Dockerfile) unless an image of the same inputs exists.
# The airflow stand-in also gets the host's CA bundle and, as pip constraints for its first
# install, the project's constraints.txt (the versions the test suite runs against).
build_image() {
    local image="$1" files context hash extras=()
    read -r -a files <<< "$2"
    shift 2
    context="$(mktemp -d)"
    trap 'rm -rf "${context}"' RETURN
    (cd "${HERE}/standins" && cp "${files[@]}" "${context}/")
    if [[ "${image}" == "${AIRFLOW_IMAGE}" ]]; then
        cp "${CA_BUNDLE}" "${context}/ca-bundle.crt"
        cp "${REPO}/constraints.txt" "${context}/constraints-seed.txt"
        extras=(ca-bundle.crt constraints-seed.txt)
    fi
    chmod -R a+rX "${context}" # the build's users read these whatever the caller's umask
    hash="$(cd "${context}" && hash_of "${BASE_HASH} $* ${image}" "${files[@]}" "${extras[@]}")"
    if have "${image}" "${hash}"; then
        say "${image} is up to date (inputs-${hash})"
        return
    fi
    say "building ${image} (docker build -f standins/${files[0]})"
    docker build --quiet --build-arg "BASE_IMAGE=${DEBIAN_IMAGE}" "$@" \
        --label "org.parallelrun.standin=true" --label "org.parallelrun.standin.inputs=${hash}" \
        -t "${image}" -t "${image%%:*}:inputs-${hash}" -f "${context}/${files[0]}" "${context}" > /dev/null
    say "built ${image}"
    # Earlier builds of this stand-in are stale now: drop their tags (and so their layers).
    docker images --format '{{.Repository}}:{{.Tag}}' "${image%%:*}" | grep ':inputs-' \
        | grep -v ":inputs-${hash}$" | xargs -r docker rmi > /dev/null || true
}

build_debian
build_image "${POSTGRES_IMAGE}" "postgres.Dockerfile postgres-entrypoint.sh"
build_image "${REDIS_IMAGE}" "redis.Dockerfile"
build_image "${AIRFLOW_IMAGE}" "airflow.Dockerfile airflow-entrypoint.sh airflow-requirements.txt" \
    --build-arg "AIRFLOW_VERSION=${AIRFLOW_VERSION}"
say "stand-ins ready: ${AIRFLOW_IMAGE} ${POSTGRES_IMAGE} ${REDIS_IMAGE}"
