# Two commands do everything on a fresh clone:  `make demo`  and  `make test`.
# Both create ./.venv and install tfface into it (editable) the first time.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_RUN := runs/quickstart

.PHONY: install install-test demo orl test test-fast bench clean

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

# The test extra adds pytest and torch (CPU) + facenet-pytorch for the weight-import parity tests.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Synthetic data -> train MobileFaceNet + CosFace -> export SavedModel -> 10-fold verification;
# then real faces: dlib's pretrained ResNet exported and verifying the photos of demo/faces.
demo: install
	$(PY) -m tfface.make_synthetic --output_dir data/synthetic
	rm -rf $(DEMO_RUN)
	$(PY) -m tfface.train_softmax --flagfile configs/quickstart.flags --subdir quickstart
	$(PY) -m tfface.validate_on_lfw data/synthetic/verify $(DEMO_RUN)
	rm -rf runs/pretrained
	$(PY) -m tfface.export --pretrained dlib_resnet_v1 --export_dir runs/pretrained --model_name dlib
	$(PY) -m tfface.validate_on_lfw demo/faces runs/pretrained/dlib --align --lfw_pairs demo/faces/pairs.csv

# Real faces: align ORL (../shared/testdata/orl) -> train on s1-s20 -> verify and classify s21-s30.
ORL_DIR ?= ../shared/testdata/orl
orl: install
	$(PY) -m tfface.recipes.orl --orl_dir $(ORL_DIR) --output_dir runs/orl

# Test processes in parallel (pytest-xdist): much of a TF test is single-threaded graph building, so
# two processes fill two cores; each one holds its own TF runtime (~1-3 GB).
PYTEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal

test: install-test
	$(PYTEST) --durations=15

test-fast: install-test
	$(PYTEST) -m "not slow"

bench: install-test
	$(PY) bench/embed_throughput.py
	$(PY) bench/mtcnn_vs_peers.py
	$(PY) bench/train_throughput.py --mixed_precision

clean:
	rm -rf $(VENV) runs data build *.egg-info
