# The two commands of the README, and a few helpers. Everything a fresh machine needs is here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO := $(CURDIR)/.davit-demo

.PHONY: run test test-unit lint check peers peers-down bench bench-quick clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	sh tools/install-mysql-driver.sh $(PY)
	sh tools/install-chromium.sh
	sh tools/install-promtool.sh $(PY)
	touch $@

## make run: the daemon on its embedded defaults with an example files.backup job.
run: $(VENV)/.installed
	mkdir -p $(DEMO)/jobs.d $(DEMO)/restored
	sed -e 's|@SOURCE@|$(CURDIR)|' config/demo/demo-backup.toml > $(DEMO)/jobs.d/demo-backup.toml
	chmod go-w $(DEMO)/jobs.d $(DEMO)/jobs.d/demo-backup.toml  # davitd refuses job files others can write (umask 002)
	@echo ""
	@echo "davitd is starting with --home $(DEMO); in another terminal try:"
	@echo "  $(VENV)/bin/davit --home $(DEMO) jobs"
	@echo "  $(VENV)/bin/davit --home $(DEMO) runs"
	@echo "  $(VENV)/bin/davit --home $(DEMO) history --follow"
	@echo "  $(VENV)/bin/davit --home $(DEMO) run demo-backup --wait"
	@echo "  $(VENV)/bin/davit --home $(DEMO) snapshots"
	@echo "  $(VENV)/bin/davit --home $(DEMO) verify <SNAPSHOT>"
	@echo "  $(VENV)/bin/davit --home $(DEMO) log verify"
	@echo "Stop it with Ctrl-C; start it again and interrupted runs resume."
	@echo ""
	$(VENV)/bin/davitd --home $(DEMO)

## make test: install, start the real test peers, run the whole suite, stop the peers.
test: $(VENV)/.installed
	$(PY) -m tests.peers up
	status=0; $(PY) -m pytest tests --durations=30 || status=$$?; $(PY) -m tests.peers down; exit $$status

## make test-unit: the fast tests only (no peers, no daemon subprocesses).
test-unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit -q

## make lint: ruff's rules (with the complexity budget), ruff's format, mypy.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## make check: before every commit: lint, types and the unit tests, in that order.
check: lint test-unit

peers: $(VENV)/.installed
	$(PY) -m tests.peers up

peers-down:
	$(PY) -m tests.peers down

## make bench: every bench (those whose peers are up), then one summary table of every goal line.
## A missed goal is shown there, not an error of make (bench/all.py exits 3 for it); see bench/README.md.
## davit's modules are compiled first, as an install from a wheel has them: with
## PYTHONDONTWRITEBYTECODE set, a fresh davitd would otherwise compile them inside the figures.
bench: $(VENV)/.installed
	$(PY) -m compileall -q davit
	$(PY) bench/all.py || [ $$? -eq 3 ]

## make bench-quick: the same at a tiny size (a smoke run: the ratios mean nothing).
bench-quick: $(VENV)/.installed
	$(PY) bench/all.py --quick || [ $$? -eq 3 ]

clean:
	rm -rf $(VENV) .davit-demo .pytest_cache .mypy_cache .ruff_cache *.egg-info
