# The README's commands. `make demo` installs everything and runs the mesh demo; `make test` runs the suite.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lab lint bench clean

setup:
	./bin/setup

demo: setup
	$(VENV)/bin/minimesh demo

test: setup
	$(PY) -m pytest -n 2 --dist loadgroup

lab: setup
	$(VENV)/bin/minimesh lab open

lint:
	$(VENV)/bin/ruff check minimesh solutions tests

bench: setup
	$(VENV)/bin/minimesh bench dataplane

clean:
	-$(VENV)/bin/minimesh cluster down --all
