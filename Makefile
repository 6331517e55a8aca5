# Two commands for a fresh machine: `make demo` and `make test`. Each creates .venv on first use and
# installs detzoo with the pinned, tested versions from constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test data lint docs benchmark clean browser

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev]'
	# TrackEval (tracking metrics) without its opencv-python requirement: detzoo has the headless cv2
	$(BIN)/python -m pip install -c constraints.txt --no-deps trackeval
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/detzoo demo

test: $(STAMP) browser data
	$(BIN)/python -m pytest

# The real data of the tests (coco128, microcontroller): used where it is ($DETZOO_DATA, ../shared/data, the
# cache), otherwise downloaded from its public sources into the cache, checked (SHA-256) and unpacked.
data: $(STAMP)
	$(BIN)/detzoo data get coco128 microcontroller

# The web page's test (tests/serve/test_serve_page.py) drives Debian's chromium through chromedriver (Selenium); a
# browser download does not work everywhere, the distribution's packages do. Installed once, when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks hubconf.py

# The documentation site (mkdocs.yml, docs/) into site/, strict: a broken link or a missing page fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_ssd.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site
