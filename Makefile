# make demo   create .venv, install callwatch, run the card-game demo (about 30 s)
# make test   everything the tests need (Debian Graphite packages, venvs), then the suite
# make bench  every benchmark shown in the README (micro, alternatives, macro, instructions, in_situ, profiling, faults, soak, memory)
# make docs   the docs site (MkDocs, strict: a broken link or reference fails) into site/
# make graphite-demo   the demo pushing to a real carbon-cache; graphite-web stays up to browse

PYTHON ?= python3
VENV ?= .venv
STACK ?= $(CURDIR)/.stack
DOCS_VENV ?= .venv-docs

.PHONY: demo test bench docs graphite-demo graphite-down

# profile: the sampled profiles and the call graph; memory: objgraph, for the leak hunt's chains
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[profile,memory]'
	touch $@

# The call graph needs graphviz's dot: installed from Debian the way scripts/test installs its
# packages (report.html, the icicle, needs nothing).
demo: $(VENV)/.installed
	@command -v dot >/dev/null || { echo "== installing graphviz (Debian) for the demo's call graph"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends graphviz >/dev/null \
	  || echo "(could not install graphviz: the call graph .svg is left out; report.html is still written)"; }
	$(VENV)/bin/callwatch demo
	@for f in report.html deal-7-vs-2.svg; do [ ! -f callwatch-demo-output/$$f ] \
	  || echo "== open in a browser: $(CURDIR)/callwatch-demo-output/$$f"; done

test:
	bash scripts/test

bench: $(VENV)/.installed
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[profile,bench]'
	$(VENV)/bin/python benchmarks/micro.py
	$(VENV)/bin/python benchmarks/alternatives.py
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check redis
	$(VENV)/bin/python benchmarks/macro.py
	@if command -v valgrind >/dev/null; then $(VENV)/bin/python benchmarks/instructions.py; \
	  else echo "(benchmarks/instructions.py skipped: it needs valgrind, apt-get install valgrind)"; fi
	$(VENV)/bin/python benchmarks/in_situ.py
	$(VENV)/bin/python benchmarks/profiling.py
	$(VENV)/bin/python benchmarks/faults.py
	$(VENV)/bin/python benchmarks/soak.py
	$(VENV)/bin/python benchmarks/memory.py

graphite-demo: $(VENV)/.installed
	scripts/graphite-up $(STACK)
	$(VENV)/bin/callwatch demo --graphite 127.0.0.1:22003 --graphite-web http://127.0.0.1:28080
	@echo "graphite-web is still running at http://127.0.0.1:28080 -- 'make graphite-down' stops it"

graphite-down:
	scripts/graphite-down $(STACK)

$(DOCS_VENV)/.installed: docs/requirements.txt
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install -q --disable-pip-version-check -r docs/requirements.txt
	touch $@

docs: $(DOCS_VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict -d site
