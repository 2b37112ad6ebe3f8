# Build the book, run the tests, open JupyterLab.
#   make book   create .venv, install the kit, prepare UTKFace, execute every
#               notebook and write the HTML book to _build/html
#   make test   the package's tests and a complete book build
#   make lab    open the notebooks in JupyterLab
# Datasets are read from $SSR_DATA_DIR (default: data/).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Relative folders are made absolute here, because notebooks run from notebooks/.
export SSR_DATA_DIR := $(abspath $(or $(SSR_DATA_DIR),data))
export PYTHONUNBUFFERED := 1

.PHONY: install data book test lab clean

$(VENV)/installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable ".[book,test]"
	touch $@

install: $(VENV)/installed

data: install
	$(BIN)/python -c "from ssr_lib import data; data.prepare_utkface()"

book: data
	$(BIN)/jupyter-book build . -W -n --keep-going

test: install
	$(BIN)/python -m pytest

lab: install
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf _build
