# Targets the README uses. Run as root: tests and the demo make loop devices.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# What the demo and the build need; the suite also needs every list in
# scripts/*-apt-packages.txt (packaging, databases, the VM test, the man
# page test).
APT_PACKAGES := build-essential python3-dev python3-venv util-linux \
	e2fsprogs xfsprogs btrfs-progs
TEST_APT_PACKAGES := $(APT_PACKAGES) \
	$(shell cat scripts/*-apt-packages.txt 2>/dev/null)

.PHONY: deps test-deps build test demo bench bench-quick deb rpm clean

# Installs only what is missing, so a prepared machine needs no network.
define apt_install
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		missing=$$(for p in $(1); do \
			dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
		if [ -n "$$missing" ]; then \
			apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				$$missing; \
		fi; \
	fi
endef

deps: $(VENV)/.deps-ok

test-deps: deps
	$(call apt_install,$(TEST_APT_PACKAGES))

$(VENV)/.deps-ok: pyproject.toml
	$(call apt_install,$(APT_PACKAGES))
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# compat: the tree is a plain sys.path entry, so a copy of the package
	# (tests/test_check.py's missing-module test) never borrows this
	# tree's compiled module through an import hook.
	$(PY) -m pip install -q -e '.[test]' \
		--config-settings editable_mode=compat
	touch $@

build: deps
	$(PY) setup.py -q build_ext --inplace

test: test-deps build
	$(PY) -m pytest $(PYTEST_ARGS)

demo: build
	PY=$(abspath $(PY)) demo/demo.sh

# Reproduces the table and plot in bench/README.md (root, < 10 min);
# bench-quick is the < 1 min smoke run CI's test suite also makes.
bench: build
	@$(PY) -c "import matplotlib" 2>/dev/null || \
		$(PY) -m pip install -q matplotlib || \
		echo "matplotlib not installed: the bench skips its plot"
	$(PY) -m bench $(BENCH_ARGS)

bench-quick: build
	$(PY) -m bench --quick $(BENCH_ARGS)

# OS packages from a clean copy of the work tree (what git ls-files lists,
# committed or not) into dist/, with their file lists and lint; Debian's own
# python builds them, whatever python3 is first on PATH. Build tools:
# scripts/packaging-apt-packages.txt.
PKGBUILD := /usr/bin/python3 scripts/pkgbuild.py --outdir dist --list --lint

deb:
	$(PKGBUILD) deb

rpm:
	$(PKGBUILD) rpm

clean:
	rm -rf build dist *.egg-info vmsnapshot/_freeze.c vmsnapshot/*.so \
		.pytest_cache .hypothesis
