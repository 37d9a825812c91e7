#!/usr/bin/env bash
# Make sure Docker works here, for .ci/run and tests/docker: install Debian's docker.io and
# debootstrap when they are missing (as root, with apt-get), start dockerd in the background when no
# daemon answers (its log: $DOCKERD_LOG, default /var/log/parallelrun-dockerd.log), and wait for it.
# Exits non-zero with the reason when Docker cannot be made to work: callers fail, never skip.
set -euo pipefail
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/parallelrun-dockerd.log}"
say() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if docker info > /dev/null 2>&1 && command -v debootstrap > /dev/null; then
    exit 0
fi
missing=()
command -v dockerd > /dev/null || missing+=(docker.io)
command -v debootstrap > /dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
    [[ "$(id -u)" == 0 ]] || die "${missing[*]} missing and not root: apt-get install ${missing[*]}"
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq > /dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null \
        || die "apt-get install ${missing[*]} failed"
fi
command -v docker > /dev/null || die "no docker client on PATH after installing docker.io"
if ! docker info > /dev/null 2>&1; then
    [[ "$(id -u)" == 0 ]] || die "no Docker daemon answers and only root can start one here"
    say "starting dockerd (log: ${DOCKERD_LOG})"
    nohup dockerd > "${DOCKERD_LOG}" 2>&1 &
    for _ in $(seq 60); do
        docker info > /dev/null 2>&1 && break
        kill -0 "$!" 2> /dev/null || { tail -20 "${DOCKERD_LOG}" >&2; die "dockerd exited (log above)"; }
        sleep 1
    done
    docker info > /dev/null 2>&1 || { tail -20 "${DOCKERD_LOG}" >&2; die "dockerd did not answer within 60 s"; }
fi
say "Docker $(docker version --format '{{.Server.Version}}') is up"
