# WeightMark — the two commands that matter: `make demo` and `make test`.
# Both install what is missing (apt libraries, the oracle venv, the real model) before they run.

SHELL := /bin/bash
SWIFT ?= swift
VENV := .venv
PY := $(VENV)/bin/python
MODEL := .cache/minilm/model.safetensors
BIN := .build/release/weightmark

.PHONY: demo test system venv model build release bench robustness gguf-leak scale-bench fuzz clean

system:
	@bash scripts/setup-system.sh

$(PY): scripts/requirements-oracles.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r scripts/requirements-oracles.txt
	@touch $(PY)

# The llama.cpp oracle (llama-cpp-python compiled from source once; the wheel is cached in ~/.cache/weightmark/wheels).
LLAMA_STAMP := $(VENV)/.llama-cpp-python
$(LLAMA_STAMP): scripts/requirements-llama.txt | $(PY)
	PYTHON=$(PY) bash scripts/install-llama-oracle.sh
	@touch $(LLAMA_STAMP)

# The hub quantizers' own libraries (MLX, bitsandbytes through transformers, torch's CPU wheel), pinned.
HUB_STAMP := $(VENV)/.hub-oracles
$(HUB_STAMP): scripts/requirements-hub.txt | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -r scripts/requirements-hub.txt
	@touch $(HUB_STAMP)

venv: $(PY) $(LLAMA_STAMP) $(HUB_STAMP)

# The model needs pip only (a bare venv inside the script), so `make demo` does not wait for the oracle venv.
$(MODEL):
	PYTHON=$(wildcard $(PY)) bash scripts/fetch-model.sh

model: $(MODEL)

build: system
	$(SWIFT) build

release: system
	$(SWIFT) build -c release --product weightmark

# The build and the model download run side by side (a fresh machine spends its time compiling).
demo:
	@$(MAKE) --no-print-directory -j2 release model
	$(BIN) demo --model .cache/minilm --workdir .cache/demo

test: system venv model
	WEIGHTMARK_REQUIRE_ORACLES=1 WEIGHTMARK_PYTHON=$(abspath $(PY)) WEIGHTMARK_MINILM=$(abspath $(MODEL)) \
		$(SWIFT) test -c release

# The robustness sweep on MiniLM (about 4 minutes on 2 cores), written to Benchmarks/Results/ (the committed tables the
# README summarizes and the tests hold the tool to), the function-preserving
# edits on a synthetic SwiGLU/RMSNorm Llama (rotation, rescaling; about 1 minute), and real fine-tuning of the marked
# MiniLM with JAX on the CPU (its own venv, .venv-finetune; about 40 minutes on 2 idle cores), each detected.
FT_VENV := .venv-finetune
FT_PY := $(FT_VENV)/bin/python
$(FT_PY): Benchmarks/finetune/requirements.txt
	python3 -m venv $(FT_VENV)
	$(FT_PY) -m pip install -q --disable-pip-version-check -r Benchmarks/finetune/requirements.txt
	@touch $(FT_PY)

robustness: release model $(FT_PY)
	@test -f .cache/bench.key || $(BIN) keygen --out .cache/bench.key
	$(BIN) bench .cache/minilm --key .cache/bench.key --out .cache/bench --shaping both --force
	for s in uniform magnitude; do cp .cache/bench/results-$$s.md Benchmarks/Results/minilm-robustness-$$s.md; \
		cp .cache/bench/plots-$$s.svg Benchmarks/Results/minilm-robustness-$$s.svg; done
	cp .cache/bench/function-uniform.svg Benchmarks/Results/minilm-function-vs-z.svg
	@test -d .cache/synth-llama || $(BIN) synth --params 30M --hidden 512 --ffn 1376 --vocab 8000 --heads 8 --kv-heads 2 \
		--layers 4 --dtype f32 --out .cache/synth-llama
	$(BIN) bench .cache/synth-llama --key .cache/bench.key --out .cache/bench-llama --families function-preserving,int-k --force
	cp .cache/bench-llama/results.md Benchmarks/Results/synth-llama-derivatives.md
	cp .cache/bench-llama/function.svg Benchmarks/Results/synth-llama-function-vs-z.svg
	bash Benchmarks/finetune/run.sh $(BIN) $(FT_PY) .cache/minilm .cache/bench.key .cache/finetune

# The README's "Verify a leak in GGUF" table: marked MiniLM through llama.cpp's own quantizer, detected.
gguf-leak: release venv model
	WEIGHTMARK=$(BIN) PYTHON=$(PY) bash scripts/gguf-leak-table.sh .cache/gguf-leak

# 2B-parameter bf16 synthetic model (4 GB, 4 shards), then WeightMark vs the numpy peer, side by side, and detect
# through a PyTorch checkpoint of the largest shard vs the same shard as safetensors; per-recipient embed vs cp.
scale-bench: release venv
	@mkdir -p .cache/scale
	@test -d .cache/scale/synth-2b || $(BIN) synth --params 2B --dtype bf16 --shards 4 --out .cache/scale/synth-2b
	@test -f .cache/scale/k.key || $(BIN) keygen --out .cache/scale/k.key
	$(PY) Benchmarks/compare.py --weightmark $(BIN) --model .cache/scale/synth-2b --key .cache/scale/k.key --work .cache/scale/work --python $(PY)
	$(PY) Benchmarks/hub_bench.py --weightmark $(BIN) --model .cache/scale/synth-2b --key .cache/scale/k.key --work .cache/scale/work --python $(PY)
	$(PY) Benchmarks/containers_bench.py --weightmark $(BIN) --model .cache/scale/synth-2b --key .cache/scale/k.key --work .cache/scale/work --python $(PY)
	$(PY) Benchmarks/scan_bench.py --weightmark $(BIN) --model .cache/scale/synth-2b --key .cache/scale/k.key --work .cache/scale/work
	bash Benchmarks/alignment_scale.sh $(BIN) .cache/scale/synth-2b .cache/scale/k.key .cache/scale/work
	bash Benchmarks/owner_key_bench.sh $(BIN) .cache/scale/synth-2b .cache/scale/k.key .cache/scale/work
	bash Benchmarks/lineage_bench.sh $(BIN) .cache/scale/synth-2b .cache/scale/k.key .cache/scale/work
	bash scripts/trace-scale.sh

# package-benchmark suites (their own package, Benchmarks/Package.swift; release build; informational wall clock on a shared 2-core machine). The
# benchmark executables get the OpenBLAS kernels weightmark itself would pick (scripts/openblas-coretype.sh).
bench: system
	cd Benchmarks && OPENBLAS_CORETYPE="$${OPENBLAS_CORETYPE:-$$(bash ../scripts/openblas-coretype.sh)}" \
		$(SWIFT) package --allow-writing-to-package-directory benchmark

# libFuzzer targets for the safetensors and GGUF parsers (Fuzz/, scripts/fuzz.sh): each target runs FUZZ_SECONDS
# (default 60) without and then with AddressSanitizer; any crash, hang or out-of-memory fails. Not part of `make test`.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh run

clean:
	rm -rf .build .build-fuzz .cache/demo
