# Two commands do everything on a fresh clone:  `make demo`  and  `make test`.
# Both create ./.venv and install tfface into it (editable) the first time.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_RUN := runs/quickstart

.PHONY: install demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

# Synthetic data -> train MobileFaceNet + ArcFace -> export SavedModel -> 10-fold verification.
demo: install
	$(PY) -m tfface.make_synthetic --output_dir data/synthetic
	rm -rf $(DEMO_RUN)
	$(PY) -m tfface.train_softmax --flagfile configs/quickstart.flags --subdir quickstart
	$(PY) -m tfface.validate_on_lfw data/synthetic/verify $(DEMO_RUN)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) bench/embed_throughput.py
	$(PY) bench/mtcnn_vs_peers.py

clean:
	rm -rf $(VENV) runs data build *.egg-info
