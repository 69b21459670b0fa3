# Two entry points (see README): `make demo` runs the main job, `make test` runs the suite.
# Both create .venv on first use and reinstall only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mixrec-installed
DATA   ?= data/demo
CONFIG ?= configs/offline.yaml
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	# torch first, pinned: the local-disk CUDA build that torchaudio 2.11 loads beside.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0
	$(PY) -m pip install -q -e ".[offline,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mixrec demo --config $(CONFIG) --data-dir $(DATA)

test: $(STAMP)
	@# PostgreSQL server binaries for the PostgreSQL tests (never fails; those tests skip with a reason).
	bash .ci/postgres.sh
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/encoders.py --config $(CONFIG)

clean:
	rm -rf $(VENV) data .pytest_cache
