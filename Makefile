# Two commands do all set-up on a fresh machine that has python3 (>= 3.11) and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
DEMO_OUT ?= demo-out

.PHONY: demo test install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# WORDS=0 leaves out the words extra (torch + a sentence-embedding model, ~70 s and ~1 GB):
# its tests then skip, saying so. torch==2.13.0 goes first: see pyproject.toml.
WORDS ?= 1

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	if [ "$(WORDS)" = "1" ]; then $(PY) -m pip install --quiet torch==2.13.0 && \
		$(PY) -m pip install --quiet -e '.[dev,words]'; fi
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lwm demo --out $(DEMO_OUT)

test: $(STAMP)
	bash tools/install-test-deps.sh
	$(PY) -m pytest

clean:
	rm -rf $(VENV) demo-out .pytest_cache
