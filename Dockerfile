# syntax=docker/dockerfile:1
#
# The replicator daemon (`replicator run`) as a container image.
#
#   docker build --build-arg EXTRAS=aws,postgres -t replicator .
#
# EXTRAS is a comma-separated list of extras from pyproject.toml's [project.optional-dependencies]
# (aws, postgres, openstack, kubernetes, openshift, azure, gcp, cloudfoundry); only those drivers' SDKs are installed.
# Never `dev`: that pulls the test and lint tool chain. Empty EXTRAS = the core only (SQLite state).
#
# Runtime conventions:
#   config      /etc/replicator/replicator.yaml (REPLICATOR_CONFIG; mount your config folder there)
#   data        /var/lib/replicator, writable by the replicator user: for a SQLite store write
#               `state: sqlite:////var/lib/replicator/replicator.db` (a relative SQLite path is
#               relative to the config file, which is usually read-only)
#   HTTP        :8080 (/healthz, /readyz, /metrics, /v1/...)
#   user        10001:10001, no shell, no home of its own besides /var/lib/replicator
#
# Both stages use the same base image on purpose: the virtual environment built in the first one
# points at that image's /usr/local/bin/python3.11.

FROM python:3.11-slim-bookworm AS build

ARG EXTRAS=aws,postgres

ENV PIP_NO_COMPILE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY replicator ./replicator
COPY platforms ./platforms
COPY state ./state

# A wheel of the project, then a pip-less virtual environment with the wheel and only the extras
# asked for. pip runs from the base image and installs into the venv (`--python`), so the venv
# copied into the final stage holds no packaging tools.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/venv \
 && wheel="$(ls /wheels/replicator-*.whl)" \
 && pip --python /opt/venv/bin/python install "${wheel}${EXTRAS:+[${EXTRAS}]}" \
 && /opt/venv/bin/python -c "import replicator.cli, platforms.registry, state"


FROM python:3.11-slim-bookworm

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/replicator \
    REPLICATOR_CONFIG=/etc/replicator/replicator.yaml

# No packaging tools in the final image: the base image's pip, setuptools and wheel go.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
 && groupadd --system --gid 10001 replicator \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/replicator --no-create-home \
        --shell /usr/sbin/nologin replicator \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/replicator \
 && install -d -o root -g root -m 0755 /etc/replicator

COPY --from=build /opt/venv /opt/venv

WORKDIR /var/lib/replicator
USER 10001:10001
EXPOSE 8080

# No curl in a slim image: the standard library asks /healthz (an HTTP error or no answer exits 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["replicator"]
CMD ["run", "--listen", "0.0.0.0:8080"]
