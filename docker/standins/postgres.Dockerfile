# A LOCAL STAND-IN for the official postgres image, from Debian bookworm's postgresql package. It is
# NOT the official image; it keeps the part of its contract the compose file uses: POSTGRES_USER,
# POSTGRES_PASSWORD and POSTGRES_DB make the role and database on first start, data in
# /var/lib/postgresql/data, listening on 5432 inside the container network, pg_isready on PATH.
# Built by docker/build-standins.sh.
ARG BASE_IMAGE=parallelrun-standin/debian:bookworm
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive \
    PGDATA=/var/lib/postgresql/data \
    PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# uid and gid 999, as in the official image, made before the package makes its own.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql --shell /bin/bash postgres \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
RUN chmod 0755 /usr/local/bin/postgres-entrypoint
USER 999
EXPOSE 5432
VOLUME ["/var/lib/postgresql/data"]
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
