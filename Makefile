# fleet.checkpoint: developer and CI entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        := $(CURDIR)/.venv
# The oldest ansible-core the collection claims (meta/runtime.yml), for sanity-oldest and units-oldest.
VENV_OLDEST := $(CURDIR)/.venv-oldest
BUILD       := $(CURDIR)/.build
COLLECTION  := $(BUILD)/ansible_collections/fleet/checkpoint
# A copy of its own for the oldest ansible-core: ansible-test keeps its venvs and output inside the copy.
OLDEST      := $(BUILD)/oldest
COLLECTION_OLDEST := $(OLDEST)/ansible_collections/fleet/checkpoint
VERSION     := $(shell sed -n 's/^version: *//p' galaxy.yml)
TARBALL     := $(BUILD)/fleet-checkpoint-$(VERSION).tar.gz
INVENTORY   := $(CURDIR)/tests/lab/inventory.yml
# A lab test that hangs fails (with its stack) instead of eating CI's time: per test, and per pytest session. The
# session's bound guards against a hang, not a budget (stop 32's CI: killed at 1500 s with 98 of 108 passed); the
# suite's time is read from the timings table `make test` prints.
PYTEST_BOUNDS := --timeout=900 --session-timeout=2700 --durations=40

# Tools run from the virtualenv, against the collection copy in .build (ansible-test needs a path that ends in
# ansible_collections/fleet/checkpoint); the real Python 3.12 comes before any pyenv shim.
PYTHON312   := $(shell tools/find-python.sh 2>/dev/null)
export PATH := $(VENV)/bin:$(if $(PYTHON312),$(dir $(PYTHON312)):)$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(BUILD)
export ANSIBLE_HOST_KEY_CHECKING := False
export ANSIBLE_DEPRECATION_WARNINGS := False
export ANSIBLE_FORCE_COLOR := False
export PY_COLORS := 0

.PHONY: help venv venv-oldest host setup collection collection-oldest sanity sanity-oldest units units-oldest mypy \
        import-graph tools-tests lint docs-lint galaxy integration test-faults lab-tests soak molecule test demo bench bench-smoke lab-up \
        lab-down lab-status lock clean test-vm fast-gates

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# pip-install VENV REQUIREMENTS (pip's "WARNING: Location ... is ignored" lines are noise from this machine's config)
pip-install = $(1)/bin/python -m pip install -q --disable-pip-version-check -r $(2) 2>&1 \
  | { grep -v '^WARNING: Location' || true; }

# Two kinds of preparation. The fast gates (sanity, units, mypy, import-graph, lint, docs-lint, galaxy) need only
# Python 3.12, git and the venv, and run as any user. The lab gates also need `host`: root, apt and a Docker daemon.
venv: $(VENV)/.installed ## The Python 3.12 venv (.venv) and ansible-test's pip shim in ~/.ansible; no root
	@tools/ansible-test-pip-shim.sh $(VENV)/bin/python

$(VENV)/.installed: requirements-dev.txt
	@py="$$(tools/find-python.sh)"; [ -x $(VENV)/bin/python ] || "$$py" -m venv $(VENV)
	$(call pip-install,$(VENV),requirements-dev.txt)
	@touch $@

venv-oldest: $(VENV_OLDEST)/.installed ## The venv with the oldest ansible-core claimed (.venv-oldest); no root
	@claimed="$$(sed -n 's/^requires_ansible: *["'"'"']*>=\([0-9]*\.[0-9]*\).*/\1/p' meta/runtime.yml)"; \
	  pinned="$$(sed -n 's/^ansible-core==//p' tools/requirements-oldest.txt)"; \
	  [ -n "$$claimed" ] && [ "$${pinned%.*}" = "$$claimed" ] || { echo "ERROR: meta/runtime.yml claims ansible-core" \
	  ">=$$claimed but tools/requirements-oldest.txt pins $$pinned: test what is claimed (same minor)" >&2; exit 1; }
	@mkdir -p $(OLDEST_HOME) && HOME=$(OLDEST_HOME) XDG_CONFIG_HOME=$${XDG_CONFIG_HOME:-$(HOME)/.config} \
	  tools/ansible-test-pip-shim.sh $(VENV_OLDEST)/bin/python

$(VENV_OLDEST)/.installed: tools/requirements-oldest.txt
	@py="$$(tools/find-python.sh)"; [ -x $(VENV_OLDEST)/bin/python ] || "$$py" -m venv $(VENV_OLDEST)
	$(call pip-install,$(VENV_OLDEST),tools/requirements-oldest.txt)
	@touch $@

host: ## As root: apt packages and a running Docker daemon (the lab gates need them)
	@tools/setup-host.sh

setup: host venv venv-oldest ## host + venv + venv-oldest: everything every gate needs

collection: venv ## Copy the collection's files to .build/ansible_collections/fleet/checkpoint (guides as docs-site RST)
	@python tools/sync_collection.py . $(COLLECTION)
	@python tools/docsite_rst.py $(COLLECTION)

# The oldest ansible-core's tools first on PATH (ansible-test, and the python3.12 its --venv is made from), and a home
# of its own: ansible-test keeps its sanity venvs in ~/.ansible/test/venv, so that `make test` can run the oldest
# gates beside the newest ones without two ansible-tests building one venv at once.
OLDEST_HOME := $(BUILD)/oldest-home
# (The user's own configuration, pip's included, stays where it is: XDG_CONFIG_HOME.)
OLDEST_ENV  = PATH=$(VENV_OLDEST)/bin:$$PATH ANSIBLE_COLLECTIONS_PATH=$(OLDEST) HOME=$(OLDEST_HOME) \
              XDG_CONFIG_HOME=$${XDG_CONFIG_HOME:-$(HOME)/.config}

collection-oldest: venv venv-oldest
	@python tools/sync_collection.py . $(COLLECTION_OLDEST)

sanity: collection ## ansible-test sanity, every test, no ignore files (newest ansible-core, requirements-dev.txt)
	cd $(COLLECTION) && ansible-test sanity --venv --python 3.12 --color no

sanity-oldest: collection-oldest ## ansible-test sanity with the oldest ansible-core claimed (.venv-oldest)
	cd $(COLLECTION_OLDEST) && $(OLDEST_ENV) ansible-test sanity --venv --python 3.12 --color no

units: collection ## ansible-test units (newest ansible-core)
	cd $(COLLECTION) && ansible-test units --venv --python 3.12 --color no --requirements

units-oldest: collection-oldest ## ansible-test units with the oldest ansible-core claimed (.venv-oldest)
	cd $(COLLECTION_OLDEST) && $(OLDEST_ENV) ansible-test units --venv --python 3.12 --color no --requirements

mypy: collection ## mypy over plugins/ (mypy.ini), from .build so that ansible_collections.* imports resolve
	cd $(BUILD) && mypy --config-file $(CURDIR)/mypy.ini --cache-dir $(BUILD)/.mypy_cache \
	  ansible_collections/fleet/checkpoint/plugins

import-graph: venv ## Print module_utils' import graph; fail on a cycle or a use of another module's private name
	pytest -p no:cacheprovider -q tools/test_import_graph.py
	python tools/import_graph.py .

tools-tests: venv ## Self-tests of the build tools (the collection copy's refresh)
	pytest -p no:cacheprovider -q tools/test_sync_collection.py

lint: collection ## ansible-lint, production profile, no skips
	cd $(COLLECTION) && ansible-lint --offline --profile production --strict

docs-lint: collection ## antsibull-docs lint-collection-docs (plugin docs, the docs site's guides, rstcheck)
	antsibull-docs lint-collection-docs --plugin-docs $(COLLECTION)

galaxy: collection ## Build the collection tarball and import-check it with galaxy-importer
	@rm -f $(BUILD)/fleet-checkpoint-*.tar.gz
	cd $(COLLECTION) && ansible-galaxy collection build --force --output-path $(BUILD)
	tools/galaxy-import-check.sh $(TARBALL)

# The fast gates in two streams at once (each gate keeps mostly one core busy): the oldest ansible-core's two, on their
# own copy of the collection and with their own home, beside the rest.
fast-gates: collection collection-oldest ## Every gate that needs no root (sanity, units, both ansible-cores; mypy, lints, galaxy), two at once
	@tools/two-streams.sh "$(BUILD)/gates" \
	  "tools/timed.sh sanity-oldest $(MAKE) --no-print-directory sanity-oldest && \
	   tools/timed.sh units-oldest $(MAKE) --no-print-directory units-oldest" \
	  "tools/timed.sh sanity $(MAKE) --no-print-directory sanity && \
	   tools/timed.sh units $(MAKE) --no-print-directory units && \
	   tools/timed.sh mypy $(MAKE) --no-print-directory mypy && \
	   tools/timed.sh import-graph $(MAKE) --no-print-directory import-graph && \
	   tools/timed.sh tools-tests $(MAKE) --no-print-directory tools-tests && \
	   tools/timed.sh lint $(MAKE) --no-print-directory lint && \
	   tools/timed.sh docs-lint $(MAKE) --no-print-directory docs-lint && \
	   tools/timed.sh galaxy $(MAKE) --no-print-directory galaxy"

lab-up: host venv ## Start the lab fleet (LAB_HOSTS=3, LAB_BOOKWORM=0, LAB_FRESH=0)
	tests/lab/up.sh

lab-down: ## Remove the lab fleet and its data
	tests/lab/down.sh

lab-status: ## Show every lab host's state
	tests/lab/status.sh

integration: host collection ## Integration tests on a fresh lab fleet: two sets of hosts at once (pytest -n 2)
	LAB_FRESH=1 LAB_BOOKWORM=2 LAB_HOSTS=6 tests/lab/up.sh
	pytest -p no:cacheprovider $(PYTEST_BOUNDS) -n 2 --dist loadfile -m "not fault and not bad_inputs and not soak and not vm" tests/integration

test-faults: host collection ## Faults injected, bad-input corpus, 2-cycle soak on the lab; prints the reliability table
	LAB_BOOKWORM=2 LAB_HOSTS=6 tests/lab/up.sh
	SOAK_CYCLES=2 pytest -p no:cacheprovider $(PYTEST_BOUNDS) -n 2 --dist loadfile -m "(fault or bad_inputs or soak) and not vm" tests/integration

# One pytest session for both (what `make test` runs): one fresh lab, each worker's hosts prepared once, and the two
# workers kept busy to the end instead of waiting for each other twice.
lab-tests: host collection ## integration and test-faults in one session on a fresh lab (pytest -n 2)
	LAB_FRESH=1 LAB_BOOKWORM=2 LAB_HOSTS=6 tests/lab/up.sh
	SOAK_CYCLES=2 pytest -p no:cacheprovider $(PYTEST_BOUNDS) -n 2 --dist loadfile -m "not vm" tests/integration

soak: host collection ## SOAK_CYCLES (default 20) host_reboot cycles over 3 lab hosts x 4 counters; records the figures
	tests/lab/up.sh
	SOAK_CYCLES=$${SOAK_CYCLES:-20} pytest -p no:cacheprovider -s -m soak tests/integration

bench: host collection ## Benchmarks on the lab (several minutes): writes docs/performance.md, .json and .png
	LAB_HOSTS=9 tests/lab/up.sh
	python tools/bench/run.py --mode full --out $(BUILD)/bench/results.json
	cp $(BUILD)/bench/results.json docs/performance.json
	python tools/bench/report.py docs/performance.json --doc docs/performance.md --png docs/performance.png

bench-smoke: host collection ## The benchmark in miniature (1 repetition, small sizes): every case runs and is reported
	tests/lab/up.sh
	pytest -p no:cacheprovider -q tools/bench
	python tools/bench/run.py --mode smoke --out $(BUILD)/bench-smoke/results.json
	python tools/bench/report.py $(BUILD)/bench-smoke/results.json --doc $(BUILD)/bench-smoke/performance.md \
	  --png $(BUILD)/bench-smoke/performance.png
	python tools/bench/check.py $(BUILD)/bench-smoke/results.json

test-vm: host collection ## Pre-copy moves between two lab hosts that are QEMU machines with Debian's kernel
	tests/lab/up.sh
	pytest -p no:cacheprovider $(PYTEST_BOUNDS) -m vm tests/integration

molecule: host collection ## Molecule scenarios on the lab image
	cd $(COLLECTION) && molecule test --all

# `host` first: a fresh CI machine then has shellcheck for sanity (ansible-test skips that test without it).
# The machine's 2 cores are the limit, and every gate is CPU-bound: what waits on the network (the lab's images:
# debootstraps, apt and image builds) runs beside the fast gates; the lab tests run alone. (Stop 32 ran the fast gates
# at nice 19 beside the lab tests: CI's lab tests then took over 1528 s; its whole suite, gates first, 1852 s before.)
test: ## As root: every gate, in order (timed, table at the end): setup, the fast gates, the lab gates
	@rm -f $(BUILD)/timings.txt
	@tools/timed.sh host $(MAKE) --no-print-directory host
	@tools/timed.sh venv $(MAKE) -j2 --no-print-directory venv venv-oldest
	@mkdir -p $(BUILD); LAB_BOOKWORM=2 tests/lab/build-images.sh --ee >$(BUILD)/lab-images.log 2>&1 & images=$$!; \
	  status=0; $(MAKE) --no-print-directory fast-gates || status=$$?; start=$$(date +%s); \
	  wait $$images || { cat $(BUILD)/lab-images.log; echo "== the lab's images failed to build ==" >&2; exit 1; }; \
	  echo "== the lab's images are built (waited $$(( $$(date +%s) - start )) s after the fast gates) =="; exit $$status
	@tools/timed.sh lab-tests $(MAKE) --no-print-directory lab-tests
	@# The QEMU hosts of test-vm boot (a minute of both cores) while bench-smoke, which leaves a core mostly idle, runs.
	@tools/timed.sh bench-smoke sh -c 'tests/lab/vm-up.sh >$(BUILD)/vm-up.log 2>&1 & \
	  $(MAKE) --no-print-directory bench-smoke || { wait; tests/lab/vm-down.sh; exit 1; }'
	@tools/timed.sh test-vm $(MAKE) --no-print-directory test-vm
	@tools/timed.sh molecule $(MAKE) --no-print-directory molecule
	@tools/timed.sh --summary

demo: host collection ## The main job on the built-in lab fleet
	tests/lab/up.sh
	tools/demo.sh

lock: ## Re-pin requirements-dev.txt and tools/requirements-oldest.txt from their .in files (throw-away venvs)
	tools/lock.sh requirements-dev.in requirements-dev.txt
	tools/lock.sh tools/requirements-oldest.in tools/requirements-oldest.txt

clean: ## Remove build output (not .venv and .venv-oldest, not the lab; the oldest ansible-test venvs in .build go too)
	rm -rf $(BUILD) tests/output
