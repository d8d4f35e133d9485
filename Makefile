# Two entry points, each doing all set-up on a fresh machine (see README):
#   make demo   JupyterLab on notebooks/quickstart.ipynb (weights-free engine when SAM weights are absent)
#   make test   every test: frontend unit tests (vitest), then pytest (unit, parity, browser, notebooks)
#
# The demo environment uses the CPU build of torch; the test environment also needs torchvision,
# because the official segment-anything, MobileSAM and sam2 packages we prove parity against
# import it (sam-widget itself never does, nor hydra, which sam2 needs).

PYTHON ?= python3
VENV ?= .venv
TEST_VENV ?= .venv-test
TORCH_DEMO ?= torch==2.13.0
TORCH_TEST ?= torch==2.14.1 torchvision==0.29.1
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test test-py test-js frontend clean

demo: $(VENV)/.installed
	$(VENV)/bin/sam-widget demo

test: $(TEST_VENV)/.installed test-js test-py

test-js: node_modules/.installed
	npx vitest run

test-py: $(TEST_VENV)/.installed
	SAM_WIDGET_CHROMIUM=$(CHROMIUM) $(TEST_VENV)/bin/python -m pytest

$(VENV)/.installed: pyproject.toml package.json
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(TORCH_DEMO)
	$(VENV)/bin/pip install -q -e . jupyterlab
	touch $@

$(TEST_VENV)/.installed: pyproject.toml package.json $(CHROMIUM)
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install -q --upgrade pip
	$(TEST_VENV)/bin/pip install -q $(TORCH_TEST)
	$(TEST_VENV)/bin/pip install -q -e ".[test]"
	# the official SAM 2.1 our parity tests compare with; built against the torch above (a
	# plain install would pull another torch) and without its CUDA extension
	$(TEST_VENV)/bin/pip install -q setuptools
	SAM2_BUILD_CUDA=0 $(TEST_VENV)/bin/pip install -q --no-build-isolation sam2==1.1.0
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund
	touch $@

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "install Chromium and set CHROMIUM=/path/to/chromium"; exit 1; }
	apt-get update -qq && apt-get install -y -qq chromium

frontend: node_modules/.installed
	npm run build

clean:
	rm -rf $(VENV) $(TEST_VENV) node_modules sam_widget/static build dist
