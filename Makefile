# The one task runner. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
# the web UI's vendored front-end files (make web-assets)
VENDOR := watchers/web/static/vendor/leaflet/leaflet.js

.PHONY: install web-assets system-deps demo test test-fast lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,edge,web]'
	# heavy stage on CPU: torch's CPU build first, Ultralytics without its dependencies (they
	# would pull a CUDA torch), then those dependencies under constraints
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-deps ultralytics==8.4.190
	$(BIN)/pip install --quiet -c ci/constraints-cpu.txt torchvision matplotlib pyyaml requests \
	  psutil ultralytics-thop onnx onnxslim onnxruntime 'rapidocr==3.10.0' 'lap>=0.5.12'
	touch $@

install: $(STAMP) $(VENDOR)

# the web UI's front-end libraries (web/package-lock.json, pinned) from the npm registry, copied
# into the package's static folder (git-ignored); pages never load anything from a CDN
web-assets: $(VENDOR)

$(VENDOR): web/package.json web/package-lock.json
	cd web && npm ci --ignore-scripts --no-audit --no-fund
	rm -rf watchers/web/static/vendor
	mkdir -p watchers/web/static/vendor/leaflet
	cp -R web/node_modules/leaflet/dist/leaflet.js web/node_modules/leaflet/dist/leaflet.css \
	  web/node_modules/leaflet/dist/images web/node_modules/leaflet/LICENSE \
	  watchers/web/static/vendor/leaflet/
	touch $@

# Debian tools the tests use: systemd-analyze (unit file checks), exiftool (the independent
# oracle for the GPS readers), smbd (a throwaway Samba for the SMB backend's tests), promtool
# (checks /metrics and monitoring/), chromium + chromedriver (the web UI's browser tests), wrk
# (bench/web.py's load generator).
system-deps:
	@missing=""; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v exiftool >/dev/null || missing="$$missing libimage-exiftool-perl"; \
	command -v smbd >/dev/null || [ -x /usr/sbin/smbd ] || missing="$$missing samba"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q $$missing; \
	  else echo "missing Debian packages:$$missing (sudo apt-get install$$missing)" >&2; fi; fi

demo: install
	$(BIN)/python scripts/demo.py

test: install system-deps
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/spool.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/preprocess.py
	$(BIN)/python bench/heavy.py
	$(BIN)/python bench/smb.py
	$(BIN)/python bench/web.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache *.egg-info web/node_modules \
	  watchers/web/static/vendor test-artifacts
