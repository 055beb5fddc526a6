"""Write each trainer's fixture run with the real trainer: tests/fixtures/trainers/<trainer>/.

Each trainer runs in its own throwaway virtualenv (never the project's: CI installs none of them); see
tools/make_trainer_fixtures.sh, which makes the venvs with the pinned versions and calls this script as
    VENV/bin/python tools/make_trainer_fixtures.py {trl,llamafactory,torchtune} FIXTURE_DIR

Each FIXTURE_DIR gets model/ (tools/trainer_fixture_model.py: a random 2-layer Llama, hidden size 16, a
word-level tokenizer), pairs.json (8 pairs) and run/ (the trainer's output folder, as written). Work runs
with FIXTURE_DIR as the working directory and relative paths, so the paths the trainers record
(model_name_or_path, base_model_name_or_path) are relative to it. CPU, seed 0, 4 optimizer steps, a
checkpoint every 2 steps (torchtune: 2 epochs of 2 steps).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_fixture_model import main as make_model  # noqa: E402
from trainer_fixture_model import write_pairs  # noqa: E402

MODEL, PAIRS, RUN = "model", "pairs.json", "run"


def trl() -> None:
    """TRL's DPOTrainer: 4 steps, checkpoint-2 and checkpoint-4, then save_model + save_state at the root."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    write_pairs(Path(PAIRS), "trl")
    dataset = datasets.load_dataset("json", data_files=PAIRS, split="train")
    args = DPOConfig(output_dir=RUN, per_device_train_batch_size=2, max_steps=4, save_steps=2, logging_steps=1,
                     bf16=False, report_to=[], use_cpu=True, seed=0, save_only_model=True, learning_rate=1e-2,
                     beta=0.25)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(MODEL), args=args, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(MODEL))
    trainer.train()
    trainer.save_model()
    trainer.save_state()


LLAMAFACTORY_YAML = f"""\
### model
model_name_or_path: {MODEL}
trust_remote_code: false
### method
stage: dpo
do_train: true
finetuning_type: full
pref_beta: 0.2
pref_loss: sigmoid
### dataset
dataset: tiny_pairs
dataset_dir: .
template: empty
cutoff_len: 64
overwrite_cache: true
preprocessing_num_workers: 1
### output
output_dir: {RUN}
logging_steps: 1
save_steps: 2
save_only_model: true
plot_loss: true
overwrite_output_dir: true
report_to: none
### train
per_device_train_batch_size: 2
gradient_accumulation_steps: 1
learning_rate: 1.0e-2
max_steps: 4
lr_scheduler_type: constant
seed: 0
use_cpu: true
bf16: false
"""


def llamafactory() -> None:
    """LLaMA-Factory's DPO stage (full fine-tune) via its CLI on a YAML, as a user runs it."""
    import json

    write_pairs(Path(PAIRS), "alpaca")
    Path("dataset_info.json").write_text(json.dumps({"tiny_pairs": {
        "file_name": PAIRS, "ranking": True,
        "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}}}, indent=1) + "\n")
    Path("dpo.yaml").write_text(LLAMAFACTORY_YAML)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "DISABLE_VERSION_CHECK": "1"}
    subprocess.run([str(Path(sys.executable).parent / "llamafactory-cli"), "train", "dpo.yaml"], check=True, env=env)


TORCHTUNE_YAML = f"""\
output_dir: {RUN}
model:
  _component_: torchtune.models.llama3.lora_llama3
  lora_attn_modules: [q_proj, v_proj, output_proj]
  apply_lora_to_mlp: true
  apply_lora_to_output: false
  lora_rank: 4
  lora_alpha: 8
  lora_dropout: 0.0
  vocab_size: {{vocab_size}}
  num_layers: 2
  num_heads: 4
  num_kv_heads: 2
  embed_dim: 16
  intermediate_dim: 32
  max_seq_len: 128
  norm_eps: 1.0e-06
  rope_base: 10000
tokenizer:
  _component_: trainer_fixture_model.TorchtuneTokenizer
  path: {MODEL}
  max_seq_len: 64
checkpointer:
  _component_: torchtune.training.FullModelHFCheckpointer
  checkpoint_dir: {MODEL}
  checkpoint_files: [model.safetensors]
  recipe_checkpoint: null
  output_dir: ${{output_dir}}
  model_type: LLAMA3
resume_from_checkpoint: false
save_adapter_weights_only: false
dataset:
  _component_: torchtune.datasets.preference_dataset
  source: json
  data_files: {PAIRS}
  split: train
seed: 0
shuffle: true
batch_size: 4
optimizer:
  _component_: torch.optim.AdamW
  fused: false
  weight_decay: 0.0
  lr: 1.0e-2
lr_scheduler:
  _component_: torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup
  num_warmup_steps: 0
loss:
  _component_: torchtune.rlhf.loss.DPOLoss
  beta: 0.15
epochs: 2
max_steps_per_epoch: 2
gradient_accumulation_steps: 1
compile: false
metric_logger:
  _component_: torchtune.training.metric_logging.DiskLogger
  log_dir: ${{output_dir}}/logs
log_every_n_steps: 1
log_peak_memory_stats: false
device: cpu
dtype: fp32
enable_activation_checkpointing: false
enable_activation_offloading: false
"""


def torchtune() -> None:
    """torchtune's lora_dpo_single_device recipe via ``tune run`` (HF checkpointer: epoch_N/ folders)."""
    write_pairs(Path(PAIRS), "messages")
    import json

    vocab_size = json.loads(Path(MODEL, "config.json").read_text())["vocab_size"]
    Path("lora_dpo.yaml").write_text(TORCHTUNE_YAML.replace("{vocab_size}", str(vocab_size)))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(Path(__file__).resolve().parent)}
    subprocess.run([str(Path(sys.executable).parent / "tune"), "run", "lora_dpo_single_device",
                    "--config", "lora_dpo.yaml"], check=True, env=env)


def main(trainer: str, fixture_dir: str) -> None:
    folder = Path(fixture_dir)
    folder.mkdir(parents=True, exist_ok=True)
    make_model(str(folder / MODEL))
    os.chdir(folder)
    {"trl": trl, "llamafactory": llamafactory, "torchtune": torchtune}[trainer]()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
