# ModelShield — every command a newcomer needs. Each target installs what it uses (Python 3.11+).
#   make bench   benchmarks (QUICK=1 for small sizes)
#   make demo    run the whole flow on a local moto-server stack
#   make test    every test (unit, integration under moto, end-to-end on the local stack and in Chromium)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAM_VENV := .tools/sam
export KERAS_BACKEND := torch
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-fast test-lambda-runtime lint build requirements bench fuzz clean install-runtime install-dev \
	browser vendor dashboard-screenshot

$(BIN)/python:
	@echo "==> creating the virtualenv $(VENV)/ with $$($(PYTHON) --version)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> upgrading pip in $(VENV)/"
	$(BIN)/pip install -q --upgrade pip

# Runtime + local stack only: what `make demo` needs.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	@echo "==> installing ModelShield and the local stack (moto server) into $(VENV)/ (first time: ~45 s)"
	$(BIN)/pip install -q -e ".[local]"
	touch $@

# Everything for tests: dev tools and the real ML libraries that build benign fixtures.
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	@echo "==> installing ModelShield, test tools and the fixture libraries (torch, keras, ...) into $(VENV)/"
	@echo "    (first time: a few minutes, ~1.5 GB; later runs skip this step)"
	$(BIN)/pip install -q -e ".[local,dev,fixtures]"
	touch $@ $(VENV)/.runtime

install-runtime: $(VENV)/.runtime
install-dev: $(VENV)/.dev

# The dashboard's browser test drives Debian's Chromium (Playwright's own browser download does not work
# everywhere); installed here when missing, so a fresh machine needs nothing beforehand.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)

# Re-fetch the dashboard's vendored front-end files from the npm registry and check their pinned sha256
# (`make lint` checks the committed copies offline).
vendor:
	$(PYTHON) scripts/vendor_frontend.py --fetch

# The screenshot in docs/ and the README: the browser test writes it after its session.
dashboard-screenshot: $(VENV)/.dev browser
	DASHBOARD_SCREENSHOT=docs/dashboard.png $(BIN)/python -m pytest -q tests/e2e/test_dashboard_in_browser.py

demo: $(VENV)/.runtime
	$(BIN)/modelshield demo

test: $(VENV)/.dev browser
	$(BIN)/python -m pytest -q

test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -q -x tests/unit

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/cfn-lint template.yaml
	$(BIN)/python scripts/gen_requirements.py --check || (echo "requirements.txt is stale: run make requirements"; exit 1)
	$(BIN)/python scripts/vendor_frontend.py

requirements:
	$(PYTHON) scripts/gen_requirements.py

$(SAM_VENV)/bin/sam:
	@echo "==> installing the AWS SAM CLI 1.170.0 into $(SAM_VENV)/ (first time: ~70 s, ~340 MB)"
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q aws-sam-cli==1.170.0

# sam build without Docker. The runtime is python3.13, which SAM wants on PATH: scripts/find_python.sh
# finds it (pyenv versions, then PATH) or stops with how to install it.
build: $(SAM_VENV)/bin/sam
	@py313="$$(scripts/find_python.sh 3.13)" && echo "==> sam build with $$py313/python3.13" && \
	  PATH="$$py313:$$PATH" $(SAM_VENV)/bin/sam build --template template.yaml

# The handler and pipeline tests again under the Lambda runtime's Python (3.13), without the ML fixture libraries.
RUNTIME_VENV := .tools/py313
$(RUNTIME_VENV)/.installed: pyproject.toml
	@py313="$$(scripts/find_python.sh 3.13)" && echo "==> creating $(RUNTIME_VENV)/ with $$py313/python3.13" && \
	  "$$py313/python3.13" -m venv $(RUNTIME_VENV)
	@echo "==> installing ModelShield and test tools into $(RUNTIME_VENV)/"
	$(RUNTIME_VENV)/bin/pip install -q -e ".[local,dev]"
	touch $@

test-lambda-runtime: $(RUNTIME_VENV)/.installed
	$(RUNTIME_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/integration/test_scan_function.py tests/unit/test_events.py tests/unit/test_local_template.py

bench: $(VENV)/.dev
	$(BIN)/python benchmarks/run_all.py

# Bounded fuzzing: the hypothesis property tests under the `fuzz` profile (tests/conftest.py), then each
# atheris harness (coverage-guided) for FUZZ_SECONDS. Crash inputs are saved under benchmarks/.data/fuzz/.
FUZZ_SECONDS ?= 120
fuzz: $(VENV)/.dev
	$(BIN)/python -m pytest -q tests -k fuzz --hypothesis-profile=fuzz
	$(BIN)/pip install -q atheris==3.0.0
	mkdir -p benchmarks/.data/fuzz
	for harness in tests/fuzz/fuzz_*.py; do \
	  PYTHONPATH=. $(BIN)/python $$harness -max_len=8192 -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=benchmarks/.data/fuzz/ || exit 1; \
	done

clean:
	rm -rf .aws-sam build dist *.egg-info .pytest_cache benchmarks/.data
