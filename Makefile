# `make demo` and `make test` work on a fresh machine: they create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Wheels of action/requirements.txt for this machine: the act tests install the action's isolated venv from it
# with no index (as an air-gapped runner would, with PIP_NO_INDEX=1 and PIP_FIND_LINKS).
WHEELHOUSE := $(VENV)/wheelhouse
# Where the CPU build of torch comes from. `auto`: a torch wheel pip already finds without an index (a local
# wheelhouse in pip's config) is used as is; otherwise the PyTorch CPU index, if it answers within 3 s; otherwise
# the default index (which serves the CUDA build: several GB of nvidia-* wheels). `none`: the default index
# alone. Any other value is used as an extra index URL.
TORCH_INDEX ?= auto
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
# Prints the pip arguments for torch (nothing, or --extra-index-url URL); the probe of the CPU index waits 3 s at most.
define TORCH_INDEX_ARGS
case "$(TORCH_INDEX)" in \
  none) ;; \
  auto) if $(PY) -m pip install --dry-run --quiet --disable-pip-version-check --no-index --no-deps --ignore-installed \
          "$$(grep '^torch==' constraints.txt)" >/dev/null 2>&1; then :; \
        elif $(PY) -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=3)' \
          "$(TORCH_CPU_INDEX)" >/dev/null 2>&1; then echo "--extra-index-url $(TORCH_CPU_INDEX)"; \
        else echo "make: $(TORCH_CPU_INDEX) did not answer: torch comes from the default index (the CUDA build)" >&2; fi ;; \
  *) echo "--extra-index-url $(TORCH_INDEX)" ;; \
esac
endef
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install lint typecheck pytest test-act test demo bench clean action-requirements wheelhouse test-stack-4x \
	rule-tables test-lm-eval-parity

$(STAMP): pyproject.toml constraints.txt action/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt $$($(TORCH_INDEX_ARGS)) -e '.[probe,test]'
	$(PY) -m pip download --quiet --disable-pip-version-check --require-hashes --no-deps \
		-r action/requirements.txt -d $(WHEELHOUSE)
	touch $(STAMP)

install: $(STAMP)

wheelhouse: install

# The hash-pinned requirements of the action's isolated venv: the core's dependencies and the build backend,
# resolved for every platform and Python lora-lock supports, at the versions constraints.txt pins.
# (Needs the package index; tests/action/test_action.py checks that the file agrees with constraints.txt.)
action-requirements: install
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt uv
	$(VENV)/bin/uv pip compile pyproject.toml action/build-requirements.in -c constraints.txt --universal \
		--python-version 3.10 --no-python-downloads --generate-hashes \
		--custom-compile-command "make action-requirements" -o action/requirements.txt

lint: install
	$(VENV)/bin/ruff check lora_lock tests bench examples action fuzz faults
	$(VENV)/bin/ruff format --check lora_lock

typecheck: install
	$(VENV)/bin/mypy

pytest: install
	$(PY) -m pytest -q -m "not act"

# The workflows (self-test.yml, examples/workflows/, tests/act/workflows/) run for real on act, on the host,
# offline (the wheelhouse above). A separate run so its cost shows on its own: `-s` prints the seconds per run.
# Its own --basetemp: another pytest run on the machine prunes old /tmp/pytest-of-$USER folders mid-run.
test-act: install
	$(PY) -m pytest -q -s -m act --basetemp=$(VENV)/act-tmp tests/action/test_act.py

test: lint typecheck pytest test-act test-lm-eval-parity

# The action's full tier on a transformers 4.x stack (huggingface_hub < 1.0) in a throwaway venv: it must stop
# with `status: error` naming both versions and change nothing. Needs the package index (about 60 MB, 1 minute).
STACK4X := $(VENV)/stack-4x
test-stack-4x: install
	$(PYTHON) -m venv --clear $(STACK4X)
	$(STACK4X)/bin/python -m pip install --quiet --disable-pip-version-check 'transformers==4.57.*'
	LORA_LOCK_STACK_4X_PYTHON=$(STACK4X)/bin/python $(PY) -m pytest -q tests/action/test_action.py -k stack_4x

# The golden set against lm-evaluation-harness itself: lm-eval 0.4.13 in its own venv, which sees the project
# venv's torch/transformers/peft through a .pth file (so only lm-eval's own dependencies install: about 2 minutes
# the first time, from the package index), then the parity test. Not part of `make install`.
LMEVAL := $(VENV)/lm-eval
LMEVAL_STAMP := $(LMEVAL)/.installed-stamp
$(LMEVAL_STAMP): $(STAMP)
	$(PYTHON) -m venv --clear $(LMEVAL)
	$(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > \
		"$$($(LMEVAL)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/lora-lock-venv.pth"
	$(LMEVAL)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt 'lm-eval==0.4.13'
	touch $(LMEVAL_STAMP)

test-lm-eval-parity: $(LMEVAL_STAMP)
	LORA_LOCK_LM_EVAL_PYTHON=$(LMEVAL)/bin/python $(PY) -m pytest -q -rs tests/probe/test_lm_eval_parity.py

demo: install
	$(PY) examples/demo.py

bench: install
	$(PY) bench/run.py

# Regenerate lora_lock/runtime/data/ from the installed transformers and peft (after a bump in constraints.txt).
rule-tables: install
	$(PY) scripts/gen_rule_tables.py --check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
