# Two commands do everything (see README):
#   make demo   create/reuse the environment, build the demo dataset and run the whole pipeline on it
#   make test   create/reuse the environment and run the test suite
SHELL := /bin/bash
.ONESHELL:
.PHONY: demo test test-fast lint venv clean-demo

venv:
	@scripts/ensure_venv.sh

demo:
	@venv=$$(scripts/ensure_venv.sh)
	PATH="$$venv/bin:$$PATH" bash scripts/demo.sh

test:
	@venv=$$(scripts/ensure_venv.sh)
	PATH="$$venv/bin:$$PATH" python -m ruff check .
	PATH="$$venv/bin:$$PATH" python -m pytest $(PYTEST_ARGS)

# unit tests only (no end-to-end nnU-Net runs): a few seconds
test-fast:
	@venv=$$(scripts/ensure_venv.sh)
	PATH="$$venv/bin:$$PATH" python -m pytest -m "not e2e" $(PYTEST_ARGS)

lint:
	@venv=$$(scripts/ensure_venv.sh)
	PATH="$$venv/bin:$$PATH" python -m ruff check . && PATH="$$venv/bin:$$PATH" python -m ruff format --check .

clean-demo:
	rm -rf demo_work
