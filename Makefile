# svlib + its companion book. `make book` builds the book, `make test` runs the tests; both set up .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.svlib-installed
MATHJAX_VERSION := 3.2.2
MATHJAX_DIR := _static/mathjax
MATHJAX_STAMP := $(MATHJAX_DIR)/.vendored-$(MATHJAX_VERSION)

.PHONY: setup mathjax book test bench format clean

# the book's workspace is this checkout (models in exp/, corpus in data/) and its results store _build/results
# (what the Results chapter shows); svlib's own default is a per-user folder (svlib/core/paths.py)
export SVLIB_HOME := $(CURDIR)
export SVLIB_RESULTS := $(CURDIR)/_build/results

# setup: create .venv if missing and install svlib with the book and test extras (again when pyproject.toml changes)
setup: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -e ".[book,test]"
	touch $@

# mathjax: vendor MathJax 3 (its es5/ build) from the npm registry into _static/mathjax so equations render offline
mathjax: $(MATHJAX_STAMP)
$(MATHJAX_STAMP):
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	npm pack --silent --pack-destination "$$tmp" mathjax@$(MATHJAX_VERSION) >/dev/null; \
	tar -xzf "$$tmp"/mathjax-$(MATHJAX_VERSION).tgz -C "$$tmp"; \
	rm -rf $(MATHJAX_DIR); mkdir -p $(MATHJAX_DIR); \
	cp -r "$$tmp"/package/es5/. "$$tmp"/package/LICENSE $(MATHJAX_DIR)/
	touch $@

# book: execute every chapter (demo profile) and build the HTML into _build/html; any warning or cell error fails;
# progress bars are for terminals, not for the built pages (TQDM_DISABLE)
book: setup mathjax
	rm -rf _build/html
	TQDM_DISABLE=1 $(VENV)/bin/jupyter-book build . -W -n --keep-going --all

# test: unit tests in tests/ plus nbval of book/*.ipynb (pytest options live in pyproject.toml)
test: setup
	$(VENV)/bin/pytest

# bench: print benchmark JSON (see bench/README.md)
bench: setup
	$(VENV)/bin/svlib params --json
	$(VENV)/bin/svlib bench features --json
	$(VENV)/bin/svlib bench extract --json
	$(VENV)/bin/svlib params --structure svlib/configs/authors_pruned_structure_0.8.json --json
	$(VENV)/bin/svlib bench prune-speedup --lengths 1 4 10 30 --align 8 16 --json
	$(VENV)/bin/svlib bench deploy --json

# format: the notebooks' code cells formatted with black at 79 columns, the width of the book's code column
format: setup
	$(PY) -m pip install -q -e ".[book,test,dev]"
	$(VENV)/bin/python book/_tools/format_notebooks.py

# clean: remove build outputs and the vendored MathJax (keeps .venv)
clean:
	rm -rf _build .pytest_cache $(MATHJAX_DIR)
