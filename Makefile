# fleet.checkpoint: developer and CI entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        := $(CURDIR)/.venv
BUILD       := $(CURDIR)/.build
COLLECTION  := $(BUILD)/ansible_collections/fleet/checkpoint
VERSION     := $(shell sed -n 's/^version: *//p' galaxy.yml)
TARBALL     := $(BUILD)/fleet-checkpoint-$(VERSION).tar.gz
INVENTORY   := $(CURDIR)/tests/lab/inventory.yml
# A lab test that hangs fails (with its stack) instead of eating CI's time: per test, and per pytest session.
PYTEST_BOUNDS := --timeout=900 --session-timeout=1500 --durations=25

# Tools run from the virtualenv, against the collection copy in .build (ansible-test needs a path that ends in
# ansible_collections/fleet/checkpoint); the real Python 3.12 comes before any pyenv shim.
export PATH := $(VENV)/bin:$(dir $(shell tools/find-python.sh 2>/dev/null)):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(BUILD)
export ANSIBLE_HOST_KEY_CHECKING := False
export ANSIBLE_DEPRECATION_WARNINGS := False
export ANSIBLE_FORCE_COLOR := False
export PY_COLORS := 0

.PHONY: help setup collection sanity units lint docs-lint galaxy integration test-faults soak molecule test demo \
        bench bench-smoke lab-up lab-down lab-status lock clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## Install apt packages, the Python 3.12 venv and ansible-test's pip shim; start dockerd
	@tools/setup-host.sh
	@tools/ansible-test-pip-shim.sh $(VENV)/bin/python

$(VENV)/.installed: requirements-dev.txt
	@tools/setup-host.sh
	@py="$$(tools/find-python.sh)"; [ -x $(VENV)/bin/python ] || "$$py" -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -r requirements-dev.txt 2>&1 | { grep -v '^WARNING: Location' || true; }
	@touch $@

collection: setup ## Copy the collection's files to .build/ansible_collections/fleet/checkpoint
	@mkdir -p $(COLLECTION)
	@rsync -a --delete --exclude /.git --exclude /.venv --exclude /.build --filter=':- .gitignore' ./ $(COLLECTION)/
	@# A repository of its own, so that ansible-test lists these files and not the (ignored) ones of the checkout.
	@[ -d $(COLLECTION)/.git ] || git -C $(COLLECTION) init -q

sanity: collection ## ansible-test sanity, every test, no ignore files
	cd $(COLLECTION) && ansible-test sanity --venv --python 3.12 --color no

units: collection ## ansible-test units
	cd $(COLLECTION) && ansible-test units --venv --python 3.12 --color no --requirements

lint: collection ## ansible-lint, production profile, no skips
	cd $(COLLECTION) && ansible-lint --offline --profile production --strict

docs-lint: collection ## antsibull-docs lint-collection-docs
	antsibull-docs lint-collection-docs --plugin-docs --skip-rstcheck $(COLLECTION)

galaxy: collection ## Build the collection tarball and import-check it with galaxy-importer
	@rm -f $(BUILD)/fleet-checkpoint-*.tar.gz
	cd $(COLLECTION) && ansible-galaxy collection build --force --output-path $(BUILD)
	tools/galaxy-import-check.sh $(TARBALL)

lab-up: setup ## Start the lab fleet (LAB_HOSTS=3, LAB_BOOKWORM=0, LAB_FRESH=0)
	tests/lab/up.sh

lab-down: ## Remove the lab fleet and its data
	tests/lab/down.sh

lab-status: ## Show every lab host's state
	tests/lab/status.sh

integration: collection ## Integration tests on a fresh lab fleet (real Docker, systemd, SSH)
	LAB_FRESH=1 LAB_BOOKWORM=1 tests/lab/up.sh
	pytest -p no:cacheprovider $(PYTEST_BOUNDS) -m "not fault and not bad_inputs and not soak" tests/integration

test-faults: collection ## Fault injection, bad-input corpus, a 2-cycle soak on the lab; prints the reliability table
	LAB_BOOKWORM=1 tests/lab/up.sh
	SOAK_CYCLES=2 pytest -p no:cacheprovider $(PYTEST_BOUNDS) -m "fault or bad_inputs or soak" tests/integration

soak: collection ## SOAK_CYCLES (default 20) host_reboot cycles over 3 lab hosts x 4 counters; records the figures
	tests/lab/up.sh
	SOAK_CYCLES=$${SOAK_CYCLES:-20} pytest -p no:cacheprovider -s -m soak tests/integration

bench: collection ## Benchmarks on the lab (several minutes): writes docs/performance.md, .json and .png
	tests/lab/up.sh
	python tools/bench/run.py --mode full --out $(BUILD)/bench/results.json
	cp $(BUILD)/bench/results.json docs/performance.json
	python tools/bench/report.py docs/performance.json --doc docs/performance.md --png docs/performance.png

bench-smoke: collection ## The benchmark in miniature (1 repetition, small sizes): every case runs and is reported
	tests/lab/up.sh
	pytest -p no:cacheprovider -q tools/bench
	python tools/bench/run.py --mode smoke --out $(BUILD)/bench-smoke/results.json
	python tools/bench/report.py $(BUILD)/bench-smoke/results.json --doc $(BUILD)/bench-smoke/performance.md \
	  --png $(BUILD)/bench-smoke/performance.png
	python tools/bench/check.py $(BUILD)/bench-smoke/results.json

molecule: collection ## Molecule scenarios on the lab image
	cd $(COLLECTION) && molecule test --all

test: setup ## Every gate, in order: sanity, units, lint, docs-lint, galaxy, integration, test-faults, bench-smoke, molecule
	@tools/timed.sh sanity $(MAKE) --no-print-directory sanity
	@tools/timed.sh units $(MAKE) --no-print-directory units
	@tools/timed.sh lint $(MAKE) --no-print-directory lint
	@tools/timed.sh docs-lint $(MAKE) --no-print-directory docs-lint
	@tools/timed.sh galaxy $(MAKE) --no-print-directory galaxy
	@tools/timed.sh integration $(MAKE) --no-print-directory integration
	@tools/timed.sh test-faults $(MAKE) --no-print-directory test-faults
	@tools/timed.sh bench-smoke $(MAKE) --no-print-directory bench-smoke
	@tools/timed.sh molecule $(MAKE) --no-print-directory molecule
	@tools/timed.sh --summary

demo: collection ## The main job on the built-in lab fleet
	tests/lab/up.sh
	tools/demo.sh

lock: ## Re-pin requirements-dev.txt from requirements-dev.in in a throw-away venv
	@py="$$(tools/find-python.sh)"; tmp="$$(mktemp -d)"; "$$py" -m venv "$$tmp" \
	  && "$$tmp/bin/pip" install -q -r requirements-dev.in \
	  && { echo "# Generated from requirements-dev.in by 'make lock' (pip freeze of a fresh Python 3.12 venv). Do not edit."; \
	       "$$tmp/bin/pip" freeze --all | grep -v -E '^(pip|setuptools)=='; } > requirements-dev.txt; rm -rf "$$tmp"

clean: ## Remove build output (not the venv, not the lab)
	rm -rf $(BUILD) tests/output
