# stackboot developer tasks. `make test` is what CI runs (see README.md).
PYTHON ?= python3
SYSTEM_PYTHON ?= /usr/bin/python3

.PHONY: test test-fast lint embed dist bench clean

test: embed-check
	$(PYTHON) -m pytest -q tests

test-fast:
	$(PYTHON) -m pytest -q -m "not bareroot" tests

# stackboot.py carries profiles/*.json verbatim; this rewrites that block.
embed:
	$(PYTHON) tests/embed_profiles.py

embed-check:
	@$(PYTHON) -c "import sys; sys.path.insert(0, 'tests'); import embed_profiles as e; \
	src = open('stackboot.py').read(); sys.exit(0 if e.BLOCK.sub(lambda _: e.render_block(e.profile_texts()), src, count=1) == src else \
	'embedded profiles differ from profiles/: run make embed')"

lint:
	vermin --no-tips --violations -t=3.6- stackboot.py
	$(PYTHON) -m ruff check --no-cache stackboot.py tests

dist: dist/stackboot.pyz

dist/stackboot.pyz: stackboot.py
	rm -rf build/zipapp && mkdir -p build/zipapp dist
	cp stackboot.py build/zipapp/__main__.py
	$(PYTHON) -m zipapp build/zipapp -p "/usr/bin/env python3" -o dist/stackboot.pyz
	rm -rf build

bench:
	$(SYSTEM_PYTHON) tests/bench.py

clean:
	rm -rf dist build .pytest_cache tests/__pycache__
