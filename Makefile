# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# Debian packages the tests need: SoftHSM2, the PKCS#11 token that the HSM
# master key tests run against, and strace, which lists every file the
# proxy writes in the no-plaintext-on-disk test.
SYSTEM_PACKAGES := softhsm2 strace
SYSTEM_FILES := /usr/lib/softhsm/libsofthsm2.so /usr/bin/strace

.PHONY: install system run test lint clean

install: system $(VENV)/.installed

# Installed with apt-get where it exists; elsewhere install them by hand.
system:
	@for file in $(SYSTEM_FILES); do [ -e $$file ] || missing=yes; done; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null 2>&1; then \
			$(SUDO) apt-get update && \
			$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y $(SYSTEM_PACKAGES); \
		else \
			echo "install $(SYSTEM_PACKAGES) to run every test" >&2; \
		fi; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --editable '.[test,bench]'
	touch $@

# SeaweedFS and the proxy on loopback, an organisation and credentials ready.
run: install
	$(PY) -m tests.stack

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) run
