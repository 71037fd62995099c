# syntax=docker/dockerfile:1
#
# The replicator daemon (`replicator run`) as a container image.
#
#   docker build --build-arg EXTRAS=aws,postgres -t replicator .
#
# EXTRAS is a comma-separated list of extras from pyproject.toml's [project.optional-dependencies]
# (aws, postgres, openstack, kubernetes, openshift, azure, gcp, cloudfoundry, saml); only those drivers' SDKs are installed
# (saml adds Debian's xmlsec1 to the final image).
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
    PYTHONDONTWRITEBYTECODE=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv

# bash for the arrays below; a failing command anywhere in a RUN fails the build.
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]

WORKDIR /src
# uv, pinned with its hashes, installs from uv.lock: the image holds exactly the versions CI tested.
COPY requirements/uv.txt ./requirements/uv.txt
RUN pip install --require-hashes -r requirements/uv.txt
COPY pyproject.toml uv.lock README.md ./
COPY replicator ./replicator
COPY platforms ./platforms
COPY state ./state

# A pip-less virtual environment with the locked dependencies of the core and of the extras asked for
# (EXTRAS=aws,postgres becomes --extra aws --extra postgres), and the project itself as a wheel, not
# editable. --locked refuses a uv.lock that does not match pyproject.toml. uv runs from the base
# image, so the venv copied into the final stage holds no packaging tools.
RUN IFS=, read -ra names <<< "${EXTRAS}"; extras=(); \
    for extra in "${names[@]}"; do extras+=(--extra "${extra}"); done; \
    uv sync --locked --no-editable --python /usr/local/bin/python3.11 "${extras[@]}" \
 && /opt/venv/bin/python -c "import replicator.cli, platforms.registry, state"


FROM python:3.11-slim-bookworm

ARG EXTRAS=aws,postgres

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

# SAML login checks XML signatures with xmlsec1 (Debian's package, a runtime tool, not a build
# tool): only in an image built with the saml extra. Not pinned: bookworm's security updates of it
# are wanted.
# hadolint ignore=DL3008
RUN case ",${EXTRAS}," in *,saml,*) \
      apt-get update && apt-get install -y --no-install-recommends xmlsec1 \
      && rm -rf /var/lib/apt/lists/* ;; esac

WORKDIR /var/lib/replicator
USER 10001:10001
EXPOSE 8080

# No curl in a slim image: the standard library asks /healthz (an HTTP error or no answer exits 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["replicator"]
CMD ["run", "--listen", "0.0.0.0:8080"]
