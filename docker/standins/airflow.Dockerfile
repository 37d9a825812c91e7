# A LOCAL STAND-IN for apache/airflow:<version>-python<x>, made from Debian packages and pip only,
# for machines that cannot pull the official image. It is NOT the official image: it copies only
# the parts of its contract that docker/Dockerfile and docker/docker-compose.yaml rely on:
#   - user `airflow`, uid 50000, group 0, HOME /home/airflow; AIRFLOW_HOME=/opt/airflow (WORKDIR)
#   - `pip install` as that user lands where `airflow` imports from (here a venv on PATH)
#   - AIRFLOW_VERSION in the environment; the constraints file at /home/airflow/constraints.txt
#   - ENTRYPOINT dumb-init + /entrypoint: `airflow <cmd>`, `<airflow sub-command>`, `bash`, `python`;
#     _AIRFLOW_DB_MIGRATE=true migrates the database first; waits for the database
#   - curl, for the compose file's healthchecks
# Built by docker/build-standins.sh (which passes BASE_IMAGE, a debootstrap of Debian bookworm).
ARG BASE_IMAGE=parallelrun-standin/debian:bookworm
FROM ${BASE_IMAGE}

ARG AIRFLOW_VERSION=3.3.2
ENV DEBIAN_FRONTEND=noninteractive \
    AIRFLOW_VERSION=${AIRFLOW_VERSION} \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW_USER_HOME_DIR=/home/airflow \
    PATH=/home/airflow/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/usr/local/share/parallelrun-standin/ca-bundle.crt \
    SSL_CERT_FILE=/usr/local/share/parallelrun-standin/ca-bundle.crt \
    REQUESTS_CA_BUNDLE=/usr/local/share/parallelrun-standin/ca-bundle.crt

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv dumb-init curl ca-certificates procps \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# The host's CA bundle (its PIP_CERT): pip inside reaches the package index through it.
COPY ca-bundle.crt /usr/local/share/parallelrun-standin/ca-bundle.crt
COPY airflow-entrypoint.sh /entrypoint
COPY airflow-requirements.txt /tmp/airflow-requirements.txt
COPY constraints-seed.txt /tmp/constraints-seed.txt

RUN useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow \
    && mkdir -p /opt/airflow/dags /opt/airflow/logs /opt/airflow/plugins /opt/airflow/config \
    && chown -R airflow:0 /opt/airflow \
    && chmod 0755 /entrypoint

USER 50000
WORKDIR /opt/airflow
RUN python3 -m venv /home/airflow/.venv \
    && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" \
        -r /tmp/airflow-requirements.txt -c /tmp/constraints-seed.txt \
    && pip freeze > /home/airflow/constraints.txt \
    && airflow version

EXPOSE 8080
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/entrypoint"]
CMD []
