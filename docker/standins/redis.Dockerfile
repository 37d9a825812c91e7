# A LOCAL STAND-IN for the official redis image, from Debian bookworm's redis-server package. It is
# NOT the official image: redis-server listens on 6379 inside the container network (the compose
# file publishes no port), with redis-cli for the healthcheck. Built by docker/build-standins.sh.
ARG BASE_IMAGE=parallelrun-standin/debian:bookworm
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
# uid and gid 999, as in the official image, made before the package makes its own.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 redis \
    && useradd --system --uid 999 --gid 999 --home-dir /var/lib/redis --shell /usr/sbin/nologin redis \
    && apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
USER 999
WORKDIR /var/lib/redis
EXPOSE 6379
ENTRYPOINT ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
