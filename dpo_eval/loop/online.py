"""`online: true`: online AI feedback (OAIF; Guo et al. 2024, "Direct Language Model Alignment from
Online AI Feedback", arXiv:2402.04792, Algorithm 1).

Every optimizer step t, for each prompt x of the step's batch (the trainer's own seeded batch order
over the prompts): two responses y1, y2 ~ pi_theta_t(.|x) are sampled from the policy being trained,
with the loop's sampling settings, sample j seeded by sample_seed(derived_seed(seed, "online", t),
x's prompt_id, j); the labeller scores both; the higher is chosen. The step's loss is the configured
loss (`train:`) on those pairs, their token ids exactly as sampled; the reference scores them live
(keep_ref_live). A tie, or an unscored or empty sample, drops that prompt's pair for the step (counted);
a micro-batch left with no pair adds no gradient (a step with none logs its loss as null). Everything else is the trainer's (`dpo_eval.train.
recipe`): one run dir OUTPUT_DIR/online/, checkpoints, resume (sampling depends only on the step and
the weights, so a resumed run is the uninterrupted one). Per-step counts: OUTPUT_DIR/online/steps/
step-T.json (prompts, pairs, ties, unscored), written atomically, summed into loop.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dpo_eval.errors import UserError
from dpo_eval.generate import Prompt, prompt_ids
from dpo_eval.jsonio import write_json, write_jsonl
from dpo_eval.loop.config import LoopConfig
from dpo_eval.loop.round import derived_seed, pair_response
from dpo_eval.sampling import sample_seed, sample_sequences
from dpo_eval.tokenization import TokenizedPair, padding_id
from dpo_eval.train.config import TrainConfig
from dpo_eval.train.losses import LossOutput, PairLogps
from dpo_eval.train.model_setup import causal_lm
from dpo_eval.train.recipe import DPORecipe

ONLINE_DIR = "online"


class OnlineRecipe(DPORecipe):
    """The trainer with each micro-batch's pairs sampled from the current policy and labelled (module docstring)."""

    def __init__(self, config: TrainConfig, prompts: list[Prompt], labeller, loop: LoopConfig):
        super().__init__(config)
        self.prompts, self.labeller, self.loop = prompts, labeller, loop
        self._step = 0
        self._counts: dict[str, int] = {}
        self._pending: list[TokenizedPair] = []

    def train_step(self, batch: np.ndarray, step: int):
        self._step, self._counts = step, {"prompts": 0, "pairs": 0, "ties": 0, "unscored": 0}
        metrics = super().train_step(batch, step)
        write_json(self.run_dir / "steps" / f"step-{step + 1}.json", {"step": step + 1, **self._counts})
        return metrics

    def _after_step(self, metrics, bar) -> None:
        if metrics.counts["loss"] == 0:  # no usable pair this step: its loss is logged as NaN (null in JSON)
            metrics.sums["loss"], metrics.counts["loss"] = float("nan"), 1
        super()._after_step(metrics, bar)

    def _micro_pairs(self, items: np.ndarray) -> list[TokenizedPair]:
        """The pairs `_micro_loss` just sampled for these items (the parent packs and scores them)."""
        return self._pending

    def _sample_pairs(self, items: np.ndarray) -> list[TokenizedPair]:
        """Sample two responses per prompt of `items` from the policy now, label them, order them."""
        s, tokenizer = self.loop.sampling, self.tokenizer
        seed = derived_seed(s.seed, "online", self._step)
        prompts = [self.prompts[int(i)] for i in items]
        ids = [prompt_ids(tokenizer, p, self.config.template) for p in prompts]
        model = causal_lm(self.module)
        with torch.no_grad(), self._autocast():
            new = sample_sequences(model, [x for x in ids for _ in range(2)],
                                   [sample_seed(seed, p.id, j) for p in prompts for j in range(2)],
                                   temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                   eos_ids={tokenizer.eos_token_id} - {None}, pad_id=padding_id(tokenizer))
        rows = [{"prompt_id": p.id, "sample_index": j, "prompt": p.text, "seed": seed,
                 "output": tokenizer.decode(new[2 * k + j], skip_special_tokens=True)}
                for k, p in enumerate(prompts) for j in range(2)]
        labels = self.labeller.label_samples(rows)
        pairs = []
        for k, p in enumerate(prompts):
            (a, b), (ya, yb) = (labels[2 * k].score, labels[2 * k + 1].score), (new[2 * k], new[2 * k + 1])
            self._counts["prompts"] += 1
            if a is None or b is None or not ya or not yb:
                self._counts["unscored"] += 1
            elif a == b:
                self._counts["ties"] += 1
            else:
                chosen, rejected = (ya, yb) if a > b else (yb, ya)
                pairs.append(TokenizedPair(f"{p.id}@{self._step}", "online", tuple(ids[k]), tuple(chosen),
                                           tuple(rejected)))
        self._counts["pairs"] += len(pairs)
        return pairs

    def _micro_loss(self, items: np.ndarray):
        pairs = self._pending = self._sample_pairs(items)
        if not pairs:  # no usable pair: a zero loss with a graph, so backward adds nothing
            zero = sum(p.sum() for p in self.module.parameters() if p.requires_grad) * 0.0
            empty = torch.zeros(0, device=self.device)
            return (LossOutput(zero.reshape(1)[:0], empty, empty),
                    PairLogps(empty, empty, empty, empty, empty, empty))
        return super()._micro_loss(items)


def online_train_config(config: LoopConfig, out: Path) -> TrainConfig:
    """The trainer settings of an online run: `train:`, keep_ref_live, a placeholder pairs file of the prompts."""
    from dpo_eval.train.config import load_config

    return load_config(None, (), **{**config.train, "policy": config.policy, "ref": config.ref or config.policy,
                                    "data": str(out / "prompts_as_pairs.jsonl"), "output_dir": str(out),
                                    "eval_data": config.eval_data, "keep_ref_live": True,
                                    "show_progress": config.train.get("show_progress", config.show_progress)})


def run_online(config: LoopConfig, prompts: list[Prompt], labeller) -> dict:
    """Train with OAIF in OUTPUT_DIR/online; returns the loop.json entry (counts summed over steps)."""
    if config.labeller == "self":
        raise UserError("online: true cannot use labeller self (it judges with a saved policy); choose another labeller")
    loss = config.train.get("loss", "dpo")
    if loss in ("kto", "npo", "listwise"):
        raise UserError(f"online: true trains on sampled pairs; loss {loss} takes other data: choose a paired loss")
    out = Path(config.output_dir) / ONLINE_DIR
    out.mkdir(parents=True, exist_ok=True)
    # the trainer's batch order runs over these rows; their responses are never trained on
    write_jsonl(out / "prompts_as_pairs.jsonl", [
        {"id": p.id, "prompt": p.text, "chosen": pair_response({"prompt": p.text, "output": "-"}),
         "rejected": pair_response({"prompt": p.text, "output": "+"})} for p in prompts])
    settings = online_train_config(config, out)
    recipe = OnlineRecipe(settings, prompts, labeller, config)
    recipe.setup()
    try:
        recipe.train()
    finally:
        recipe.cleanup()
    steps = sorted(out.glob("steps/step-*.json"))
    totals = {k: sum(json.loads(p.read_text())[k] for p in steps) for k in ("prompts", "pairs", "ties", "unscored")}
    totals["samples"] = 2 * totals["prompts"]  # two samples per prompt of every step
    from dpo_eval.train import checkpoint as ckpt

    return {"round": 1, "policy": config.policy, "reference": config.ref or config.policy, "run_dir": str(out),
            "final_checkpoint": str(ckpt.latest_checkpoint(out)), "online": True, "counts": totals}
