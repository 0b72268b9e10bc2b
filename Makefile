# Two commands for a newcomer: `make demo` and `make test`. Both create .venv with pip when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench bench-quick bench-survey clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/adc search --budget flops=0.5

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

bench: $(STAMP)
	bash benchmarks/ensure_data.sh
	$(BIN)/python -m benchmarks.run --full

bench-quick: $(STAMP)
	bash benchmarks/ensure_data.sh
	$(BIN)/python -m benchmarks.run --quick

bench-survey: $(STAMP)
	bash benchmarks/ensure_data.sh
	$(BIN)/python -m benchmarks.survey --full

clean:
	rm -rf $(VENV) runs .pytest_cache
