# Two commands on a fresh machine (Python 3.11 + node/npm): `make demo`, `make test`.
# Everything installs into the project: .tools/ (uv), .venv/ (locked Python deps), node_modules/ (pinned npm).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.8
UV := .tools/bin/uv
export UV_PYTHON_DOWNLOADS := never

.PHONY: setup system-packages demo test lint contracts bench clean

setup: .venv/.synced node_modules/.installed

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

demo: setup
	.venv/bin/paychan demo

# Debian packages the tests drive, installed only when missing: docker-compose (validates
# docker-compose.yml; no Docker engine needed) and chromium (the Temporal UI test).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-packages:
	@command -v docker-compose >/dev/null && command -v chromium >/dev/null || \
	  ($(SUDO) apt-get update && \
	   $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y docker-compose chromium)

test: setup system-packages
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/pytest -q

lint: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

contracts: setup
	.venv/bin/python -m contracts.build

clean:
	rm -rf .venv .tools node_modules .pytest_cache .ruff_cache
