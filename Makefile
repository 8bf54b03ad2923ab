# Set-up is shared by every target: .venv is created if missing, torch==2.13.0 (the local CPU
# build) goes in first, then the package with its dev extras. The stamp file makes repeated runs
# instant until pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-slow fuzz-long bench lint clean flower-demo test-flower model-check
FLOWER_STAMP := $(VENV)/.flower-stamp

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m gptfl_secure.sim $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# >= 10^5 fuzz cases: 54 hypothesis tests x 2000 examples (about 11 minutes on 2 cores)
fuzz-long: $(STAMP)
	GPTFL_HYPOTHESIS_PROFILE=long $(PY) -m pytest tests/protocols/test_fuzz_messages.py \
		tests/protocols/test_fuzz_state_machines.py tests/iblt/test_fuzz_sketch.py \
		--hypothesis-show-statistics $(PYTEST_ARGS)

# exhaustive malicious-server explorer over real clients, with mutants (tests/model_check)
model-check: $(STAMP)
	$(PY) -m tests.model_check

bench: $(STAMP)
	for b in benches/*_bench.py; do $(PY) $$b || exit 1; done

$(FLOWER_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,flower]'
	touch $(FLOWER_STAMP)

# exec: make's SIGTERM (which make forwards to its child) and Ctrl-C reach the script itself,
# whose clean-up stops every process of the demo. PORT, NODE_PORT, NODES, ROUNDS, LOCAL_EPOCHS
# come from the environment; ARGS are extra run-config pairs.
DEMO_OUT ?= runs/flower-demo
flower-demo: $(FLOWER_STAMP)
	exec env PYTHON_BIN=$(abspath $(VENV))/bin OUT=$(DEMO_OUT) scripts/flower_demo.sh "$(ARGS)"

test-flower: $(FLOWER_STAMP)
	$(PY) -m pytest tests/flower -m "slow or not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check gptfl_secure tests benches

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
