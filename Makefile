# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

SOFTHSM_LIBRARY := /usr/lib/softhsm/libsofthsm2.so
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install hsm run test lint clean

install: hsm $(VENV)/.installed

# SoftHSM2, the PKCS#11 token that the HSM master key tests run against,
# from the Debian package where apt-get exists. Elsewhere install it by hand.
hsm:
	@if [ ! -e $(SOFTHSM_LIBRARY) ]; then \
		if command -v apt-get >/dev/null 2>&1; then \
			$(SUDO) apt-get update && \
			$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y softhsm2; \
		else \
			echo "SoftHSM2 is missing ($(SOFTHSM_LIBRARY)); install it to run the HSM tests" >&2; \
		fi; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --editable '.[test]'
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
