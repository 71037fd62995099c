# Two commands matter: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-dev

export PIP_NO_COMPILE = 1
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: install lint test unit integration demo bench clean kube-backend ldap-backend

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check replicator platforms state tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

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

test: lint kube-backend ldap-backend
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration tests/e2e

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# Speed numbers (bench/results.md) and the long randomized fault scenario (docs/testing.md).
bench: $(STAMP)
	$(BIN)/python scripts/bench.py
	REPLICATOR_SCENARIO_STEPS=100 $(BIN)/pytest -q -p no:cacheprovider tests/e2e/test_scenarios.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache build *.egg-info
