# WeightMark — the two commands that matter: `make demo` and `make test`.
# Both install what is missing (apt libraries, the oracle venv, the real model) before they run.

SHELL := /bin/bash
SWIFT ?= swift
VENV := .venv
PY := $(VENV)/bin/python
MODEL := .cache/minilm/model.safetensors
BIN := .build/release/weightmark

.PHONY: demo test system venv model build release bench clean

system:
	@bash scripts/setup-system.sh

$(PY): scripts/requirements-oracles.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r scripts/requirements-oracles.txt
	@touch $(PY)

venv: $(PY)

$(MODEL): | $(PY)
	PYTHON=$(PY) bash scripts/fetch-model.sh

model: $(MODEL)

build: system
	$(SWIFT) build

release: system
	$(SWIFT) build -c release --product weightmark

demo: release model
	$(BIN) demo --model .cache/minilm --workdir .cache/demo

test: system venv model
	WEIGHTMARK_REQUIRE_ORACLES=1 WEIGHTMARK_PYTHON=$(abspath $(PY)) WEIGHTMARK_MINILM=$(abspath $(MODEL)) \
		$(SWIFT) test

bench: system
	cd Benchmarks && $(SWIFT) package --package-path .. benchmark

clean:
	rm -rf .build .cache/demo
