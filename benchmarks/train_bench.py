"""Training step time: dpo-eval's DPORecipe vs TRL's DPOTrainer, same model, data, batch and machine.

    python benchmarks/train_bench.py                       # SmolLM2-135M-Instruct, HH-RLHF, 4 pairs/step
    python benchmarks/train_bench.py --model path/to/model --steps 5 --max-length 512

Both trainers get the same plain-text (prompt, chosen, rejected) strings, written once to a
jsonl, in the same order and the same batches (TRL's sampler is sequential; ours is given
batch i = pairs [4i, 4i+4)). Same settings on both sides: sigmoid DPO, beta, AdamW at a
constant LR, no warmup, weight decay 0, clip 1.0, batch 4, no accumulation, float32, no
gradient checkpointing, full fine-tune, the initial policy as reference, max_length per
sequence with keep_start truncation (pairs whose prompt alone reaches max_length are left out
beforehand, as TRL would drop them). Each trainer runs in its own child process.

Reference log-probs are precomputed by both before training (TRL: precompute_ref_log_probs=True;
ours: the reference cache), so neither step time includes the reference model. Timed: one
optimizer step, i.e. forward, backward, grad clipping, optimizer step, zero_grad (TRL: from
on_step_begin to on_step_end, so collation is outside; ours: `recipe.train_step`, which packs
the batch inside). The first --warmup steps are not counted. Each trainer uses its own default
AdamW implementation (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="policy (and reference): model folder or alias")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="pairs with a plain-text form (e.g. HH-RLHF)")
    ap.add_argument("--max-length", type=int, default=256, help="tokens per prompt+response sequence")
    ap.add_argument("--batch-size", type=int, default=4, help="pairs per optimizer step")
    ap.add_argument("--steps", type=int, default=3, help="measured optimizer steps")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured optimizer steps first")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--workdir", default=str(ROOT / "bench_out" / "train"))
    ap.add_argument("--worker", choices=("ours", "trl"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def n_steps(args) -> int:
    return args.warmup + args.steps


# ------------------------------------------------------------------------------------------- data


def write_pairs(args, model_dir: str, out: Path) -> int:
    """The first warmup+steps batches of plain-text pairs TRL would not drop, as a text jsonl."""
    from dpo_eval.data.pairs import load_pairs
    from dpo_eval.models import load_tokenizer

    needed = args.batch_size * n_steps(args)
    tok = load_tokenizer(model_dir, cache_dir=Path(args.workdir) / "cache")
    loaded = load_pairs(args.data, skip_invalid=True, limit=needed * 8)
    rows = []
    for pair in loaded.pairs:
        if pair.text_form is None:
            raise SystemExit(f"{args.data}: pair {pair.id} has no plain-text form; use HH-RLHF-style data")
        prompt, chosen, rejected = pair.text_form
        if len(tok(prompt)["input_ids"]) < args.max_length:
            rows.append({"id": pair.id, "prompt": prompt, "chosen": chosen, "rejected": rejected})
        if len(rows) == needed:
            break
    if len(rows) < needed:
        raise SystemExit(f"only {len(rows)} usable pairs in the first {needed * 8}; lower --steps or --batch-size")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------- workers


def worker_ours(args) -> dict:
    import numpy as np
    import torch

    from dpo_eval.engine.batching import plan_batches
    from dpo_eval.train.config import load_config
    from dpo_eval.train.metrics_log import reduce_metrics
    from dpo_eval.train.recipe import DPORecipe

    work = Path(args.workdir)
    out_dir = work / "ours_run"
    shutil.rmtree(out_dir, ignore_errors=True)  # a leftover run would be resumed
    config = load_config(None, (), policy=args.model_dir, data=str(work / "pairs.jsonl"), output_dir=str(out_dir),
                         cache_dir=str(work / "cache"), loss="dpo", beta=args.beta, learning_rate=args.lr,
                         lr_schedule="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                         batch_size=args.batch_size, grad_accum=1, max_steps=n_steps(args),
                         max_length=args.max_length, truncation="keep_start", template="plain",
                         device="cpu", dtype="float32", show_progress=False, seed=0)
    recipe = DPORecipe(config)
    recipe.setup()
    opt_seconds = []
    step_optimizer = recipe.optimizer.step

    def timed_optimizer_step(*a, **k):
        start = time.perf_counter()
        result = step_optimizer(*a, **k)
        opt_seconds.append(time.perf_counter() - start)
        return result

    recipe.optimizer.step = timed_optimizer_step
    steps, cpu, losses, tokens, real, padded = [], [], [], [], [], []
    for step in range(n_steps(args)):
        items = np.arange(step * args.batch_size, (step + 1) * args.batch_size)
        lengths = [recipe.data.train[i].packed_length for i in items]
        tokens.append(sum(lengths) + sum(len(recipe.data.train[i].prompt_ids) for i in items))
        rows = [row for batch in plan_batches(lengths, token_budget=sum(lengths)) for row in batch]  # as train_step
        real.append(sum(lengths))
        padded.append(len(rows) * max(sum(lengths[i] for i in row) for row in rows))
        start, start_cpu = time.perf_counter(), time.process_time()
        metrics = recipe.train_step(items, step)
        steps.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        losses.append(reduce_metrics(metrics, recipe.ctx)["loss"])
    recipe.cleanup()
    return {"step_s": steps, "cpu_s": cpu, "optimizer_s": opt_seconds, "loss": losses, "sequence_tokens": tokens,
            "model_tokens": real, "padded_tokens": padded,
            "threads": torch.get_num_threads(),
            "optimizer": f"torch.optim.AdamW (fused={recipe.optimizer.defaults.get('fused')})"}


def _trl_tokenization_mismatches(trainer, rows: list[dict]) -> int:
    """Pairs whose TRL token ids (before truncation) differ from dpo-eval's plain-text tokenization."""
    from dpo_eval.data.pairs import PreferencePair
    from dpo_eval.tokenization import TokenizerSettings, tokenize_pair

    settings = TokenizerSettings(template="plain", max_length=None)
    different = 0
    for row, processed in zip(rows, trainer.train_dataset, strict=True):
        pair = PreferencePair(row["id"], "default", row["prompt"], row["chosen"], row["rejected"])
        ours = tokenize_pair(pair, trainer.processing_class, "plain", settings)
        theirs = tuple(tuple(processed[k]) for k in ("prompt_ids", "chosen_ids", "rejected_ids"))
        different += (ours.prompt_ids, ours.chosen_ids, ours.rejected_ids) != theirs
    return different


def worker_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.marks = {"begin": [], "pre_opt": [], "opt": [], "end": [], "cpu_begin": [], "cpu_end": []}

        def on_step_begin(self, *_, **__):
            self.marks["cpu_begin"].append(time.process_time())
            self.marks["begin"].append(time.perf_counter())

        def on_pre_optimizer_step(self, *_, **__):
            self.marks["pre_opt"].append(time.perf_counter())

        def on_optimizer_step(self, *_, **__):
            self.marks["opt"].append(time.perf_counter())

        def on_step_end(self, *_, **__):
            self.marks["end"].append(time.perf_counter())
            self.marks["cpu_end"].append(time.process_time())

    work = Path(args.workdir)
    rows = read_rows(work / "pairs.jsonl")
    dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    config = DPOConfig(output_dir=str(work / "trl_run"), per_device_train_batch_size=args.batch_size,
                       gradient_accumulation_steps=1, beta=args.beta, loss_type="sigmoid", learning_rate=args.lr,
                       lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                       max_steps=n_steps(args), max_length=args.max_length, truncation_mode="keep_start",
                       precompute_ref_log_probs=True, bf16=False, gradient_checkpointing=False, use_cpu=True,
                       train_sampling_strategy="sequential", logging_steps=1, save_strategy="no",
                       report_to=[], disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False,
                       seed=0)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation="sdpa")
    timer = StepTimer()
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, callbacks=[timer],
                         processing_class=AutoTokenizer.from_pretrained(args.model_dir))
    if len(trainer.train_dataset) != len(rows):
        raise SystemExit(f"TRL dropped {len(rows) - len(trainer.train_dataset)} pairs: batches would differ")
    tokens, padded = [], []
    for step in range(n_steps(args)):  # the batches the sequential sampler will give
        batch = trainer.data_collator([trainer.train_dataset[i] for i in
                                       range(step * args.batch_size, (step + 1) * args.batch_size)])
        tokens.append(int(batch["attention_mask"].sum()))
        padded.append(batch["input_ids"].numel())
    mismatches = _trl_tokenization_mismatches(trainer, rows)
    trainer.train()
    marks = timer.marks
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"step_s": [e - b for b, e in zip(marks["begin"], marks["end"])],
            "cpu_s": [e - b for b, e in zip(marks["cpu_begin"], marks["cpu_end"])],
            "optimizer_s": [o - p for p, o in zip(marks["pre_opt"], marks["opt"])],
            "loss": losses, "sequence_tokens": tokens, "model_tokens": tokens, "padded_tokens": padded,
            "threads": torch.get_num_threads(), "tokenization_mismatches": mismatches,
            "optimizer": f"{getattr(config.optim, 'value', config.optim)} (transformers default)"}


# ------------------------------------------------------------------------------------------- parent


def run_worker(args, name: str, model_dir: str) -> dict:
    out = Path(args.workdir) / f"{name}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--worker", name, "--model-dir", model_dir, "--workdir", args.workdir,
           "--max-length", str(args.max_length), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--lr", str(args.lr), "--beta", str(args.beta)]
    start = time.perf_counter()
    with open(Path(args.workdir) / f"{name}.log", "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{name} worker failed (exit {done.returncode}); see {Path(args.workdir) / (name + '.log')}")
    return {**json.loads(out.read_text()), "worker_s": time.perf_counter() - start}


def report(args, ours: dict, trl: dict, model_dir: str, load_before: tuple) -> None:
    measured = slice(args.warmup, None)
    ms = lambda r, key="step_s": 1000 * sum(r[key][measured]) / len(r[key][measured])  # noqa: E731
    seq_tokens = ours["sequence_tokens"][measured]
    print(f"model={model_dir}")
    print(f"pairs/step={args.batch_size} max_length={args.max_length} measured steps={args.steps} "
          f"(+{args.warmup} warmup) lr={args.lr} beta={args.beta} threads={ours['threads']}/{trl['threads']}")
    print(f"sequence tokens/step (prompt+chosen + prompt+rejected, same for both): "
          f"{sum(seq_tokens) / len(seq_tokens):.0f}"
          + ("" if ours["sequence_tokens"] == trl["sequence_tokens"] else
             f"  MISMATCH ours={ours['sequence_tokens']} trl={trl['sequence_tokens']}"))
    print(f"TRL token ids that differ from dpo-eval's plain tokenization: {trl['tokenization_mismatches']} pairs")
    print(f"{'trainer':9s} {'ms/step':>8s} {'optim ms':>8s} {'seq tok/s':>9s} {'model tok/step':>14s} "
          f"{'padded':>7s} {'CPU %':>6s} {'process s':>9s}  optimizer")
    for name, r in (("dpo-eval", ours), ("TRL", trl)):
        busy = 100 * sum(r["cpu_s"][measured]) / sum(r["step_s"][measured])
        print(f"{name:9s} {ms(r):8.0f} {ms(r, 'optimizer_s'):8.0f} "
              f"{1000 * sum(seq_tokens) / len(seq_tokens) / ms(r):9.0f} {sum(r['model_tokens'][measured]) / args.steps:14.0f} "
              f"{sum(r['padded_tokens'][measured]) / args.steps:7.0f} {busy:6.0f} {r['worker_s']:9.0f}  {r['optimizer']}")
    print("per step (first = warmup): sequence tokens " + ", ".join(str(t) for t in ours["sequence_tokens"]))
    print("  padded tokens dpo-eval: " + ", ".join(str(t) for t in ours["padded_tokens"]) +
          " | TRL: " + ", ".join(str(t) for t in trl["padded_tokens"]))
    print("  ms dpo-eval: " + ", ".join(f"{1000 * s:.0f}" for s in ours["step_s"]) +
          " | TRL: " + ", ".join(f"{1000 * s:.0f}" for s in trl["step_s"]))
    print("  loss dpo-eval: " + ", ".join(f"{x:.4f}" for x in ours["loss"]) +
          " | TRL: " + ", ".join(f"{x:.4f}" for x in trl["loss"]))
    print(f"step time TRL / dpo-eval: {ms(trl) / ms(ours):.2f}x   "
          f"(without the optimizer step: {(ms(trl) - ms(trl, 'optimizer_s')) / (ms(ours) - ms(ours, 'optimizer_s')):.2f}x)")
    print("model tok/step: tokens run through the model (ours: prompt once per pair, packed; TRL: prompt twice); "
          "padded: incl. padding. CPU %: process CPU time / step wall time (about 100 x threads when the "
          "machine is otherwise idle). process s: the whole child process (load, reference precompute, steps).")
    for name, r in (("dpo-eval", ours), ("TRL", trl)):
        if sum(r["cpu_s"][measured]) < 0.85 * r["threads"] * sum(r["step_s"][measured]):
            print(f"WARNING: {name} used its {r['threads']} threads only part of the time: other jobs were "
                  "probably running; rerun on an idle machine before trusting the ratio")
    print(f"load average before/after: {' '.join(f'{x:.2f}' for x in load_before)} / "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.worker:
        result = worker_ours(args) if args.worker == "ours" else worker_trl(args)
        (Path(args.workdir) / f"{args.worker}.json").write_text(json.dumps(result))
        return
    from dpo_eval.models import identify_model

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    model_dir = str(identify_model(args.model, cache_dir=work / "cache").resolved)
    write_pairs(args, model_dir, work / "pairs.jsonl")
    ours = run_worker(args, "ours", model_dir)
    trl = run_worker(args, "trl", model_dir)
    report(args, ours, trl, model_dir, load_before)


if __name__ == "__main__":
    main()
