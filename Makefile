# `make demo` and `make test` work on a fresh machine: they create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install lint typecheck pytest test demo bench clean rule-tables

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[probe,test]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check lora_lock tests bench examples action fuzz faults
	$(VENV)/bin/ruff format --check lora_lock

typecheck: install
	$(VENV)/bin/mypy

pytest: install
	$(PY) -m pytest -q

test: lint typecheck pytest

demo: install
	$(PY) examples/demo.py

bench: install
	$(PY) bench/run.py

# Regenerate lora_lock/runtime/data/ from the installed transformers and peft (after a bump in constraints.txt).
rule-tables: install
	$(PY) scripts/gen_rule_tables.py --check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
