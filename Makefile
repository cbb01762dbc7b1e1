# The two commands: `make demo` (the main job) and `make test` (lint, types, all tests).
# Each does its own set-up: .venv, packages, and whatever the tests build.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: demo test setup lint typecheck imports unit

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	scripts/checkov.sh
	scripts/shellcheck.sh

typecheck: setup
	$(VENV)/bin/mypy

imports: setup
	$(VENV)/bin/lint-imports

unit: setup
	$(PY) -m pytest -m "not cluster and not gemma and not prefect and not browser and not unsloth and not images and not mlflow and not serving"

test: setup lint typecheck imports
	@scripts/test.sh
