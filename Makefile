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
browser:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

train: setup
	$(BIN)/python -m eye_clf train

test: setup browser
	$(BIN)/python -m pytest -q
