# Two commands: `make train` (setup + the main job) and `make test` (setup + the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup browser train test

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# Debian's Chromium for the labeling studio's browser test (Playwright drives it; no browser download).
# apt-get installs over 100 packages (400+ MB) and needs root: sudo is used when you are not root.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
BROWSER_TEST := tests/test_studio_browser.py

browser:
	@test -x "$${EYE_CLF_CHROMIUM:-/usr/bin/chromium}" || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

train: setup
	$(BIN)/python -m eye_clf train

# Everything; without Chromium (not installable here) everything but the browser test, said before and after.
# In CI (CI=true, as .ci/run sets) a missing Chromium is an error, never a skip.
test: setup
	@if $(MAKE) --no-print-directory browser; then $(BIN)/python -m pytest -q; \
	elif [ "$$CI" = true ]; then echo "error: Chromium is required in CI for $(BROWSER_TEST)" >&2; exit 1; \
	else msg="SKIPPED $(BROWSER_TEST): Chromium could not be installed (run 'make browser' as root, or set EYE_CLF_CHROMIUM)"; \
	echo "$$msg" >&2; $(BIN)/python -m pytest -q --ignore=$(BROWSER_TEST); rc=$$?; echo "$$msg" >&2; exit $$rc; fi
