# metaal: two set-up commands. `make demo` installs and runs a comparison on a bundled dataset;
# `make test` installs the dev extras and runs the test suite (`make test-fast` without the slow tests).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= runs/demo
# torch first, pinned to the CPU build available on these machines; the project's own range is loose.
TORCH  ?= torch==2.13.0

.PHONY: demo test test-fast lint install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/metaal compare --data sklearn:wine --strategies random,margin,entropy,coreset,policy:default \
		--budget 40 --initial 6 --seeds 3 --jobs 2 --out $(OUT)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider

# without the training, browser and subprocess tests (@pytest.mark.slow)
test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider -m "not slow"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs
