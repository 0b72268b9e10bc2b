# Two commands for a newcomer: `make demo` and `make test`. Both create .venv with pip when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# make test: two xdist workers (one per core), each file on one worker (a module's tests share fixtures and order)
.PHONY: demo test install bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/adc search --budget flops=0.5

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

# make bench SUITE=rivals (python -m benchmarks --list names the suites); bench-quick: the 3-row quick suite
SUITE ?= rivals
bench: $(STAMP)
	bash benchmarks/ensure_data.sh
	$(BIN)/python -m benchmarks $(SUITE)

bench-quick: $(STAMP)
	bash benchmarks/ensure_data.sh
	$(BIN)/python -m benchmarks quick

clean:
	rm -rf $(VENV) runs .pytest_cache
