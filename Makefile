# Two commands matter: `make demo` and `make test`. Both set up what they need.
#
# Dependencies are locked: uv.lock holds the exact version and hashes of every package, and
# `make install` (which demo and test run first) installs exactly that set with uv, itself pinned
# with hashes in requirements/uv.txt. `make lock` refreshes the lock; `make test-latest` runs lint
# and the suite on the newest versions pyproject.toml allows, in .venv-latest, without the lock.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TOOLS   = .venv-uv
UV      = $(TOOLS)/bin/uv
STAMP   = $(VENV)/.installed-dev
LATEST  = .venv-latest

export PIP_NO_COMPILE = 1
export PIP_DISABLE_PIP_VERSION_CHECK = 1
# uv installs into $(VENV) with the interpreter $(PYTHON); it never downloads a Python of its own.
export UV_PROJECT_ENVIRONMENT = $(VENV)
export UV_PYTHON_DOWNLOADS = never

.PHONY: install lint test unit integration demo demo-keep bench clean kube-backend ldap-backend prometheus-backend saml-backend lock test-latest

$(UV): requirements/uv.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --require-hashes -r requirements/uv.txt
	touch $(UV)

# --locked: a pyproject.toml changed without `make lock` fails here instead of installing
# something else than what the lock says.
$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync -q --locked --extra dev --python $(PYTHON)
	touch $(STAMP)

install: $(STAMP)

# The lint and test recipes, for the locked .venv and for .venv-latest.
define LINT
	$(1)/ruff check replicator platforms state tests scripts bench
	$(1)/mypy
	$(1)/lint-imports
endef

lint: $(STAMP)
	$(call LINT,$(BIN))

# etcd + kube-apiserver/kube-controller-manager v1.20.2 for the Kubernetes tests, cached in
# ~/.cache/replicator-tests (a failure only makes those tests skip, or fail when CI=true).
kube-backend:
	-bash scripts/kube-backend.sh >/dev/null

# OpenLDAP (slapd, ldap-utils) from Debian for the LDAP connector tests, when missing and we are
# root with apt-get (a failure only makes those tests skip, or fail when CI=true).
ldap-backend:
	-@command -v slapd >/dev/null || test -x /usr/sbin/slapd || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections 2>/dev/null; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slapd ldap-utils >/dev/null \
	    || echo "ldap-backend: could not install slapd: the LDAP tests skip (fail under CI=true)"; \
	  else echo "ldap-backend: slapd missing and not root with apt-get: the LDAP tests skip"; fi; }

# xmlsec1 from Debian for SAML login (pysaml2 checks XML signatures with it; the SAML tests), when
# missing and we are root with apt-get (a failure only makes those tests skip, or fail when CI=true).
saml-backend:
	-@command -v xmlsec1 >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends xmlsec1 >/dev/null \
	    || echo "saml-backend: could not install xmlsec1: the SAML tests skip (fail under CI=true)"; \
	  else echo "saml-backend: xmlsec1 missing and not root with apt-get: the SAML tests skip"; fi; }

# promtool from Debian's prometheus package for the tests of deploy/prometheus (the alert rules and
# their unit tests, tests/unit/test_monitoring.py), when missing and we are root with apt-get (a
# failure only makes those tests skip, or fail when CI=true); promtool lands in /usr/bin. The
# package also brings the Prometheus server and enables its service, which must not run here: the
# install runs under a policy-rc.d that refuses every service start (Docker images ship one; when
# there is none, a temporary one, removed afterwards), and the service is then disabled for the
# next boot (systemd and sysv-rc).
prometheus-backend:
	-@command -v promtool >/dev/null || test -x /usr/bin/promtool || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    rc=/usr/sbin/policy-rc.d; \
	    if [ ! -e $$rc ]; then trap "rm -f $$rc" EXIT; printf '#!/bin/sh\nexit 101\n' >$$rc; chmod 755 $$rc; fi; \
	    if DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; then \
	      deb-systemd-helper disable prometheus.service >/dev/null 2>&1; \
	      update-rc.d prometheus disable >/dev/null 2>&1; true; \
	    else echo "prometheus-backend: could not install promtool: the promtool tests skip (fail under CI=true)"; fi; \
	  else echo "prometheus-backend: promtool missing and not root with apt-get: the promtool tests skip"; fi; }

test: lint kube-backend ldap-backend prometheus-backend saml-backend
	$(BIN)/pytest -q

# A new uv.lock from pyproject.toml's ranges, every package at its newest allowed version.
lock: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

# The suite on the newest versions pyproject.toml allows (what `pip install replicator` gives a
# library user today), ignoring uv.lock: drift shows up here before it reaches the lock. The test
# that the environment is the locked one does not apply.
test-latest: $(UV) kube-backend ldap-backend prometheus-backend saml-backend
	$(UV) venv -q --allow-existing --python $(PYTHON) $(LATEST)
	VIRTUAL_ENV=$(LATEST) $(UV) pip install -q --upgrade -e '.[dev]'
	$(call LINT,$(LATEST)/bin)
	$(LATEST)/bin/pytest -q --deselect tests/unit/test_locked.py::test_installed_versions_are_the_locked_ones

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration tests/e2e

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# The demo, then the emulator and a daemon stay up with the commands to try next; Ctrl-C stops them.
demo-keep: $(STAMP)
	$(BIN)/python scripts/demo.py --keep

# Speed numbers (bench/results.md) and the long randomized fault scenario (docs/testing.md).
bench: $(STAMP)
	$(BIN)/python scripts/bench.py
	REPLICATOR_SCENARIO_STEPS=100 $(BIN)/pytest -q -p no:cacheprovider tests/e2e/test_scenarios.py

clean:
	rm -rf $(VENV) $(TOOLS) $(LATEST) .demo .pytest_cache .mypy_cache .ruff_cache build *.egg-info
