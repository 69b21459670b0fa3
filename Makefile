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

# Ship it (README "Ship it"): OCI image without a Docker daemon. This machine's podman needs
# runc (crun cannot set up its hybrid cgroups) and ulimits within the container's own limits.
export MIXREC_PODMAN_RUNTIME ?= runc
export MIXREC_PODMAN_OPTS ?= --ulimit=nofile=8192:8192 --ulimit=nproc=8192:8192

.PHONY: venv demo test bench clean image-tools base-image image image-test

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
	@# buildah/podman/docker-registry for the registry TLS/auth test (never fails; it skips without them).
	bash .ci/image-tools.sh
	@# The import contract (.importlinter): layers point down, no import loops.
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q
	@# Then the image stage: Bento -> OCI image -> loopback registry -> pull -> run (~8 min, ~20 GB of disk;
	@# it skips with its reason where the image tools cannot be installed).
	$(PY) -m pytest -q -m image tests/test_image.py

bench: $(STAMP)
	$(PY) bench/encoders.py --config $(CONFIG)

# Debian packages for daemonless builds (root; never fails: without them the image test skips).
image-tools:
	bash .ci/image-tools.sh

# The local base image (Debian bookworm + Python 3.11 from Debian packages), once per machine.
base-image: image-tools
	podman image exists localhost/mixrec-base:bookworm-py3.11 || bash deploy/base-image.sh

# The whole path by hand: demo Bento -> image -> throwaway loopback registry -> push -> pull -> run.
image: $(STAMP) base-image
	bash deploy/ship-demo.sh

# The same path as a test (not part of `make test`: ~6 GB image, see BENCHMARKS.md for its time).
# It makes the base image itself when missing, and skips (with the reason) without the tools.
image-test: $(STAMP) image-tools
	$(PY) -m pytest -q -m image tests/test_image.py

clean:
	rm -rf $(VENV) data .pytest_cache
