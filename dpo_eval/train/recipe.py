"""The DPO training recipe: one readable class, lifecycle setup -> train -> cleanup.

The loop, in order: pick the global batch, per micro-batch pack the pairs, policy log-probs
through the engine (response-only projection), reference log-probs from the precomputed cache,
loss, backward (summed loss / global batch, so accumulation is exact), clip, LR, step, log,
evaluate, checkpoint. TDPO (tdpo1, tdpo2) scores each micro-batch against the live reference
(dpo_eval.engine.seq_kl); listwise packs each prompt with its K ranked responses (engine.multi).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dpo_eval.engine.distributed import DistContext, device_for_rank, init_distributed, shutdown
from dpo_eval.engine.flex import micro_batch_rows, use_flex
from dpo_eval.engine.logprobs import packed_logps
from dpo_eval.engine.packing import pack_rows
from dpo_eval.engine.seq_kl import packed_token_kl
from dpo_eval.errors import UserError
from dpo_eval.jsonio import write_json
from dpo_eval.models import fingerprint_module, load_model, resolve_device, resolve_dtype
from dpo_eval.train import checkpoint as ckpt
from dpo_eval.train.config import TrainConfig
from dpo_eval.train.family_inputs import (
    npo_pairs,
    npo_step_loss,
    packed_logps_with_tails,
    prepare_family_inputs,
)
from dpo_eval.train.kto import kto_pairs, kto_step_loss
from dpo_eval.train.listwise import group_logps, ranked_micro_loss
from dpo_eval.train.losses import REFERENCE_FREE, PairLogps, compute_loss
from dpo_eval.train.losses_token import TOKEN_LOSSES, tdpo_step_loss
from dpo_eval.train.metrics_log import StepMetrics, reduce_metrics
from dpo_eval.train.model_setup import causal_lm, make_trainable
from dpo_eval.train.prepare import PreparedData, attach_reference, prepare_data
from dpo_eval.train.schedule import global_batches, learning_rate_at, micro_batch


class LogpModule(torch.nn.Module):
    """Wraps a causal LM so DDP sees one forward: packed batch -> (log-probs, counts, ...).

    `score(model, batch, exclude_ids)` is packed_logps for pairs, group_logps for listwise groups,
    and packed_token_kl against the live reference for TDPO (which also returns reference log-probs
    and sequential KLs; the reference is held in a closure, not registered, so DDP never syncs it).
    """

    def __init__(self, model: torch.nn.Module, exclude_ids: torch.Tensor | None, score: Callable = packed_logps):
        super().__init__()
        self.model = model
        self.exclude_ids = exclude_ids
        self.score = score

    def forward(self, batch):
        return self.score(causal_lm(self.model), batch, self.exclude_ids)


@dataclass
class RunState:
    step: int = 0
    log_history: list | None = None


class DPORecipe:
    """Train a policy with a DPO-family loss; writes checkpoints the rest of dpo-eval analyses."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.run_dir = Path(config.output_dir)
        self.state = RunState(log_history=[])

    def setup(self) -> None:
        cfg = self.config
        self.ctx: DistContext = init_distributed()
        self.device = device_for_rank(resolve_device(cfg.device), self.ctx)
        self.param_dtype = torch.float32  # master weights; bf16 autocast on CUDA
        self.compute_dtype = resolve_dtype(cfg.dtype, self.device)
        torch.manual_seed(cfg.seed)
        self.uses_ref = cfg.loss not in REFERENCE_FREE
        self.data: PreparedData = prepare_data(cfg)
        self._special = frozenset(self.data.exclude_ids.tolist()) if self.data.exclude_ids is not None else frozenset()
        self._report_skipped()
        self.global_batch = cfg.batch_size * cfg.grad_accum * self.ctx.world_size
        self._check_sizes()
        if self.uses_ref:
            attach_reference(self.data, cfg, self._every_training_sequence(), self.ctx, self.device,
                             self.compute_dtype)
        self.family = prepare_family_inputs(cfg, self.data, self.ctx, self.device, self.compute_dtype)
        loaded = load_model(cfg.policy, device=self.device, dtype=self.param_dtype,
                            cache_dir=self.data.cache_root, trust_remote_code=cfg.trust_remote_code,
                            allow_pickle=cfg.allow_pickle)
        self.tokenizer = self.data.tokenizer
        self.module = make_trainable(loaded.model, cfg)
        self._resume_if_possible()
        self.module.train()
        self.forward = self._wrap(LogpModule(self.module, self.data.exclude_ids, self._score_function()))
        self.optimizer = self._optimizer()
        if self._resume_state is not None:
            self.optimizer.load_state_dict(self._resume_state["optimizer"])
            torch.set_rng_state(self._resume_state["torch_rng"])
        self._write_manifest()

    def _score_function(self) -> Callable:
        if self.config.loss in TOKEN_LOSSES:
            ref = self.data.ref_model
            return lambda model, batch, exclude_ids: packed_token_kl(model, ref, batch, exclude_ids)
        if self.family.needs_policy_tails:  # LD-DPO
            return packed_logps_with_tails
        return group_logps if self.data.ranked is not None else packed_logps

    def _every_training_sequence(self) -> list:
        """What the reference must score: the pairs, or for KTO each scheduled micro-batch's packing."""
        if self.data.kto_examples is None:
            return self.data.train
        sequences = []
        for step in range(self.total_steps):
            batch = self._global_batch(step)
            for rank in range(self.ctx.world_size):
                for micro in range(self.config.grad_accum):
                    items = micro_batch(batch, rank, self.ctx.world_size, micro, self.config.batch_size)
                    sequences += self._micro_pairs(items)
        return sequences

    def _report_skipped(self) -> None:
        for part, n in self.data.n_skipped_special.items():
            if n and self.ctx.is_main:
                print(f"skipped {n} {part} row(s) with a response made only of special tokens "
                      "(mask_special_tokens, skip_invalid)", file=sys.stderr)

    def _global_batch(self, step: int) -> np.ndarray:
        epoch, index = divmod(step, self.steps_per_epoch)
        return global_batches(self.data.n_items, self.global_batch, self.config.seed, epoch)[index]

    def _micro_pairs(self, items: np.ndarray) -> list:
        if self.data.kto_examples is not None and self.config.loss == "npo":
            return npo_pairs(self.data.kto_examples, items)
        if self.data.kto_examples is not None:
            return kto_pairs(self.data.kto_examples, list(items), self.config.max_length, self._special)
        return [self.data.train[i] for i in items]

    def _check_sizes(self) -> None:
        n = self.data.n_items
        if self.config.loss == "kto" and self.config.batch_size < 2:
            raise UserError("kto needs batch_size >= 2: the KL reference point pairs prompts with other "
                            "items' completions within a micro-batch")
        if n < self.global_batch:
            raise UserError(f"{n} training items but one global batch needs {self.global_batch} "
                            "(batch_size x grad_accum x processes); lower batch_size or grad_accum")
        steps_per_epoch = n // self.global_batch
        self.total_steps = self.config.max_steps or steps_per_epoch * self.config.epochs
        self.steps_per_epoch = steps_per_epoch

    def _wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.ctx.is_distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.module.parameters() if p.requires_grad]
        fused = self.device.type in ("cpu", "cuda")  # one kernel for all tensors: same math, faster
        return torch.optim.AdamW(params, lr=self.config.learning_rate, betas=self.config.adam_betas,
                                 weight_decay=self.config.weight_decay, fused=fused)

    def _resume_if_possible(self) -> None:
        self._resume_state = None
        latest = ckpt.latest_checkpoint(self.run_dir) if self.run_dir.exists() else None
        if latest is None:
            return
        ckpt.load_checkpoint_weights(latest, self.module)
        self._resume_state = ckpt.load_training_state(latest)
        self.state.step = int(self._resume_state["step"])
        trainer_state = json.loads((latest / ckpt.TRAINER_STATE).read_text())
        self.state.log_history = trainer_state.get("log_history", [])
        if self.ctx.is_main:
            print(f"resuming from {latest} (step {self.state.step})", file=sys.stderr)

    def _write_manifest(self) -> None:
        cfg = self.config
        manifest = {
            "schema_version": 1,
            "kind": "dpo_eval.train",
            "config": {**cfg.to_dict(), "beta": cfg.loss_beta},  # the beta used, so resuming compares it
            "policy_init": cfg.policy,
            "reference": self.data.ref_identity,
            # every hyperparameter the loss ran with, defaults filled in; beta_source: set in the config or not
            "loss": {"name": cfg.loss, **cfg.loss_settings(), "beta_source": "config" if cfg.beta is not None
                     else "loss default", "nll_coef": cfg.nll_coef},
            # source / eval_source: what was read, a Hub dataset pinned to its commit (org/name@<commit>:split)
            "data": {"path": self.config.data, "n_pairs": len(self.data.train), "eval_path": self.config.eval_data,
                     "source": self.data.sources.get("train"), "eval_source": self.data.sources.get("eval"),
                     "n_skipped_only_special_tokens": self.data.n_skipped_special},
            "tokenization": self.data.tokenization,
        }
        ckpt.check_manifest(self.run_dir, manifest)
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / ckpt.MANIFEST, manifest)

    def train(self) -> list[dict]:
        cfg = self.config
        bar = tqdm(total=self.total_steps, initial=self.state.step, desc=f"train {cfg.loss}", unit="step",
                   file=sys.stderr, disable=not (cfg.show_progress and self.ctx.is_main), dynamic_ncols=True)
        while self.state.step < self.total_steps:
            step = self.state.step
            metrics = self.train_step(self._global_batch(step), step)
            self.state.step = step + 1
            self._after_step(metrics, bar)
        bar.close()
        return self.state.log_history

    def train_step(self, batch: np.ndarray, step: int) -> StepMetrics:
        """One optimizer step over a global batch (this rank's share, in micro-batches)."""
        cfg = self.config
        totals = self.accumulate_gradients(batch)
        grad_norm = self._clip()
        lr = learning_rate_at(step, base_lr=cfg.learning_rate, total_steps=self.total_steps,
                              warmup_steps=cfg.warmup_steps, schedule=cfg.lr_schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        totals.learning_rate, totals.grad_norm = lr, grad_norm
        return totals

    def accumulate_gradients(self, batch: np.ndarray) -> StepMetrics:
        """Backward over this rank's micro-batches; grads end as d(mean loss over the global batch)."""
        cfg = self.config
        totals = StepMetrics()
        for micro in range(cfg.grad_accum):
            items = micro_batch(batch, self.ctx.rank, self.ctx.world_size, micro, cfg.batch_size)
            sync = micro == cfg.grad_accum - 1 or not self.ctx.is_distributed
            with (contextlib.nullcontext() if sync else self.forward.no_sync()), self._autocast():
                out, logps = self._micro_loss(items)
                (out.losses.sum() / (cfg.batch_size * cfg.grad_accum)).backward()
            totals.add(out, logps)
        return totals

    def _micro_loss(self, items: np.ndarray):
        params = {"beta": self.config.loss_beta, **self.config.loss_params}
        if self.data.ranked is not None:
            groups = [self.data.ranked[i] for i in items]
            return ranked_micro_loss(groups, self.forward, self.device, self.data.pad_id, self.data.ref_rows,
                                     nll_coef=self.config.nll_coef, **params)
        pairs = self._micro_pairs(items)
        rows = micro_batch_rows([p.packed_length for p in pairs], use_flex(causal_lm(self.module), self.device))
        order = [i for row in rows for i in row]
        packed = pack_rows([[pairs[i] for i in row] for row in rows], self.data.pad_id)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        sums, counts, *live = (t[inverse.to(t.device)] for t in self.forward(packed.to(self.device)))
        counts = counts.float()
        if self.config.loss in TOKEN_LOSSES:  # TDPO: reference log-probs and sequential KLs from the same projection
            ref_sums, seq_kl = live
            logps = PairLogps(sums[:, 0], sums[:, 1], ref_sums[:, 0], ref_sums[:, 1], counts[:, 0], counts[:, 1])
            return tdpo_step_loss(self.config.loss, logps, seq_kl, params, self.config.nll_coef), logps
        ref = self.data.ref_logps(pairs, self.device) if self.uses_ref else (None, None)
        if self.config.loss == "npo":
            return npo_step_loss(self.data.kto_examples, items, sums, counts, ref[0], params), None
        logps = PairLogps(sums[:, 0], sums[:, 1], ref[0], ref[1], counts[:, 0], counts[:, 1],
                          extras=self.family.extras(pairs, live[0] if live else None, self.device))
        if self.data.kto_examples is not None:
            labels = torch.tensor([self.data.kto_examples[i].is_desirable for i in items], device=sums.device)
            return kto_step_loss(logps, labels, params, self.ctx), logps
        return compute_loss(self.config.loss, logps, params, self.config.nll_coef), logps

    def _autocast(self):
        if self.device.type == "cuda" and self.compute_dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.compute_dtype)
        return contextlib.nullcontext()

    def _clip(self) -> float:
        params = [p for p in self.module.parameters() if p.requires_grad]
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm else math.inf
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def _after_step(self, metrics: StepMetrics, bar) -> None:
        cfg, step = self.config, self.state.step
        record = reduce_metrics(metrics, self.ctx)
        record.update(step=step, epoch=round(step / self.steps_per_epoch, 4))
        if step % cfg.log_every == 0 or step == self.total_steps:
            self.state.log_history.append(record)
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == self.total_steps):
            self.state.log_history.append({**self.evaluate(), "step": step})
        bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record.get('rewards/accuracies', math.nan):.2f}")
        bar.update(1)
        if (cfg.save_every and step % cfg.save_every == 0) or step == self.total_steps:
            self.save(step)

    def evaluate(self) -> dict:
        """Held-out loss and reward metrics (TRL names with an eval_ prefix)."""
        from dpo_eval.train.evaluate import evaluate_policy

        self.module.eval()
        with self._autocast():
            result = evaluate_policy(causal_lm(self.module), self.data, self.config, self.ctx)
        self.module.train()
        return result

    def save(self, step: int) -> None:
        if self.ctx.is_main:
            state = {"global_step": step, "max_steps": self.total_steps, "num_train_epochs": self.config.epochs,
                     "epoch": step / self.steps_per_epoch, "log_history": self.state.log_history,
                     "train_batch_size": self.global_batch, "logging_steps": self.config.log_every,
                     "save_steps": self.config.save_every, "policy_fingerprint": fingerprint_module(self.module)}
            ckpt.save_checkpoint(self.run_dir, step, self.module, self.tokenizer, self.optimizer, state)
            ckpt.pause_if_requested(self.run_dir, step)
        if self.ctx.is_distributed:
            torch.distributed.barrier()

    def cleanup(self) -> None:
        shutdown(self.ctx)


def train(config: TrainConfig) -> list[dict]:
    """Run a whole training job; returns the log history. With `stages`, one run per stage (sDPO)."""
    if config.stages:
        from dpo_eval.train.stages import train_stages

        return train_stages(config, train)
    recipe = DPORecipe(config)
    recipe.setup()
    try:
        return recipe.train()
    finally:
        recipe.cleanup()
