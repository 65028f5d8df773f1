# stackboot developer tasks. `make test` is what CI runs (see README.md).
PYTHON ?= python3
SYSTEM_PYTHON ?= /usr/bin/python3

.PHONY: deps test test-fast lint embed dist bench clean

# Everything the tests need, from scratch (root; Debian's and PyPI's registries).
DEBS = debootstrap gpgv debian-archive-keyring make gcc libc6-dev tar gzip ca-certificates iproute2 util-linux fdisk btrfs-progs zfs-fuse moosefs-master moosefs-metalogger moosefs-chunkserver moosefs-client moosefs-cli moosefs-cgi moosefs-cgiserv fuse3 cloud-init
PIPS = pytest pyfakefs vermin ruff ansible-core==2.19.14

deps:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(DEBS)
	$(PYTHON) -m pip install -q --disable-pip-version-check $(PIPS)
	$(PYTHON) tests/bareroot.py build bookworm bullseye trixie
	$(PYTHON) tests/upstream.py fetch

test:
	$(PYTHON) -m pytest -q tests

test-fast:
	$(PYTHON) -m pytest -q -m "not bareroot" tests

# stackboot.py carries profiles/*.json verbatim; this rewrites that block.
embed:
	$(PYTHON) tests/embed_profiles.py

lint:
	$(PYTHON) -c "import sys, vermin; sys.argv = ['vermin', '--no-tips', '--violations', '-t=3.6-', 'stackboot.py']; sys.exit(vermin.main())"
	$(PYTHON) -m ruff check --no-cache stackboot.py tests

dist: dist/stackboot.pyz

# A launcher, stackboot as a module and its bytecode (used where the Python version matches).
dist/stackboot.pyz: stackboot.py
	mkdir -p dist
	$(PYTHON) -c "import sys; sys.path.insert(0, '.'); import stackboot; stackboot.write_zipapp('dist/stackboot.pyz', open('stackboot.py', 'rb').read())"

bench:
	$(SYSTEM_PYTHON) tests/bench.py

clean:
	rm -rf dist build .pytest_cache tests/__pycache__
