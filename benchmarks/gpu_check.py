"""One-call GPU check of the engine, trainer and local judge on a Llama-3.2-1B-shaped random model.

    python benchmarks/gpu_check.py --device cuda --out $OUT/gpu_check.json    # H100/H200, < 10 min
    python benchmarks/gpu_check.py --tiny --device cpu --out /tmp/x.json      # seconds (the test runs this)

Needs torch and transformers only (no datasets, peft, trl or gguf; nothing is downloaded) and
works from a source checkout that is not pip-installed (helpers live in gpu_check_parts.py beside it). Each section runs on its own: a failure
is recorded in the JSON (status "failed" and the traceback) and the other sections still run.
Exit code 0 only when every section ran and every check passed.

Sections
1. agreement    engine log-probs, bf16 copy vs float32 model (same random-init weights), on random
                pairs whose chosen and rejected responses have equal lengths (so a margin is not
                just a length difference). Reported per sequence and per token (|delta| / tokens),
                and for margins (chosen - rejected).
2. throughput   engine (bf16) vs the anchor (plain HF forward on padded fixed-size batches, then
                log_softmax + gather), same pairs: sequence tokens/s, MFU, their ratio.
3. train_step   the DPO recipe (DPORecipe.setup + train_step: forward, loss, backward, clip, AdamW)
                with bf16 autocast on CUDA on fewer layers; step time, finite loss and grad norm,
                and the recipe's own step-0 rewards (reference cached by the engine in the compute
                dtype, policy = float32 master weights under autocast).
4. step0        policy = deepcopy(reference) through the same packed_logps path: rewards 0 and the
                DPO loss log 2, exactly up to float32 summation order on CPU; under bf16 autocast on
                CUDA up to TOL_STEP0_BF16 (H200, 2026-11-28: max |reward| 1.8e-5 at beta 0.1, i.e.
                1.8e-4 nats per sequence, 12-19% of pairs not exactly 0, |loss - log 2| <= 1.2e-5:
                the policy pass, which needs gradients, gets other attention/matmul kernels than
                the no-grad reference pass, and bf16 rounds them differently).
5. flex_scoring the FlexAttention packing (issue #20) vs the dense-mask engine vs the anchor, at a
                Llama-3.2-1B and a Llama-3.1-8B shape (bf16): tokens/s, MFU, profiler top kernels,
                8B policy + reference peak memory (gpu_check_flex.py).
6. train_step   (as 3 above; it runs with the engine's default path, flex on CUDA)
7. train_paths  the recipe's step with the flex and the dense path: step time, MFU, top kernels.
8. judge        LocalJudge on the device with a tiny random model and an offline word tokenizer.

Tolerance for section 1 (bf16 vs float32). bf16 keeps 8 significant bits: unit roundoff
u = 2^-8. A token's log-prob is z_t - logsumexp(z); the logsumexp (float32, over the vocabulary)
averages rounding errors away, so its error is about that of one logit, which collects roughly
4 roundings per layer (attention, MLP, two residual adds) plus the head: relative error
eps ~ u * sqrt(4 L + 1) (0.032 for L = 16), times the logit spread sigma_z (about 1 for std-0.02
random weights: near-uniform distributions, log p ~ -log V). Per token |delta| ~ eps * sigma_z;
over n independent tokens the sum's error grows like sqrt(n), so the per-token figure of a sum
(|delta_seq| / n) is ~ eps * sigma_z / sqrt(n). Checks: mean |delta_seq| / n <= 0.02 nats and
max <= 0.05 nats (the single-token error bound, so a systematic error of one token's size would
fail), same for margins / (n_chosen + n_rejected); sigma_z and the prediction are reported.

FLOPs (forward). N = weights of the decoder's nn.Linear layers (no embeddings, no head),
d = hidden size, V = vocabulary, L = layers, A = heads * head_dim:
    model FLOPs  = sum over sequences [2 N T + 2 V d R + 2 L A T^2]   (T = prompt + response, R =
                   response tokens, causal attention: half of the 4 L A T^2 of a full T x T)
    executed     = 2 N (rows x width, padding included) + 2 V d (positions projected)
                   + 4 L A (sum over rows of width^2)                     (masked SDPA: full L x L)
MFU = model FLOPs / seconds / peak; HFU = executed / seconds / peak. Peak bf16 dense from the device
name (H100 SXM 989, H100 PCIe 756, H100 NVL 835, H200 989 TFLOP/s), or --peak-tflops.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_VERSION = 1
TOL_MEAN_PER_TOKEN = 0.02  # nats, bf16 vs float32 (see the module docstring)
TOL_MAX_PER_TOKEN = 0.05
TOL_FLOAT_NOISE = 1e-5  # nats: "exactly equal" up to float32 summation order
TOL_STEP0_BF16 = 1e-3  # nats per sequence log-ratio under bf16 autocast on CUDA (measured 1.8e-4, H200)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check_flex import section_flex_scoring, section_train_paths  # noqa: E402
from gpu_check_flex import summary_lines as flex_summary_lines  # noqa: E402
from gpu_check_parts import (  # noqa: E402 - benchmarks/ is not a package
    BF16_UNIT_ROUNDOFF,
    TINY,
    Plan,
    agreement_stats,
    anchor_logps,
    anchor_rows,
    bf16_copy,
    build_llama,
    engine_logps,
    engine_rows,
    environment,
    executed_flops,
    free_memory,
    logit_spread,
    make_plan,
    model_flops,
    peak_tflops,
    random_pairs,
    rate_figures,
    save_model_dir,
    sequence_tokens,
    timed,
    write_word_pairs,
)


def bootstrap_imports(root: Path = ROOT) -> str:
    """Make dpo_eval (and dpo_eval.metrics / dpo_eval.reports, which live in metrics/ and reports/)
    importable from a source checkout; returns "installed" or "source tree"."""
    try:
        import dpo_eval.metrics  # noqa: F401
        return "installed"
    except ImportError:
        pass
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import dpo_eval

    for sub in ("metrics", "reports"):
        name = f"dpo_eval.{sub}"
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, root / sub / "__init__.py",
                                                          submodule_search_locations=[str(root / sub)])
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            setattr(dpo_eval, sub, module)
    return "source tree"


# ------------------------------------------------------------------------------------------ sections


@dataclass
class Context:
    """What the sections share: settings, the device, a work folder and the big models (built once)."""

    plan: Plan
    device: object
    workdir: Path
    peak: float | None
    models: dict

    def budget(self) -> int:
        from dpo_eval.engine.batching import default_token_budget

        return self.plan.token_budget or default_token_budget(self.device)

    def model(self, kind: str):
        """"fp32" or "bf16": the random-init 1B-shaped model, the bf16 one a copy of the fp32 one."""
        if "fp32" not in self.models:
            self.models["fp32"] = build_llama(self.plan.model, self.device)
        if kind == "bf16" and "bf16" not in self.models:
            self.models["bf16"] = bf16_copy(self.models["fp32"])
        return self.models[kind]

    def drop_models(self) -> None:
        self.models.clear()
        free_memory()


def section_agreement(ctx: Context) -> dict:
    import torch

    torch.set_float32_matmul_precision("highest")  # a true float32 reference: no TF32
    fp32, bf16 = ctx.model("fp32"), ctx.model("bf16")
    pairs = random_pairs(ctx.plan.n_pairs, ctx.plan, fp32.config.vocab_size, seed=1)
    ref, ref_s = timed(lambda: engine_logps(fp32, pairs, ctx.budget()), ctx.device)
    low, low_s = timed(lambda: engine_logps(bf16, pairs, ctx.budget()), ctx.device)
    stats = agreement_stats(low.chosen_logp, low.rejected_logp, ref.chosen_logp, ref.rejected_logp,
                            ref.chosen_tokens, ref.rejected_tokens)
    spread = logit_spread(ref.chosen_logp, ref.rejected_logp, ref.chosen_tokens, ref.rejected_tokens)
    layers = fp32.config.num_hidden_layers
    eps = BF16_UNIT_ROUNDOFF * math.sqrt(4 * layers + 1)
    mean_n = float((ref.chosen_tokens.mean() + ref.rejected_tokens.mean()) / 2)
    counts_equal = bool((ref.chosen_tokens == low.chosen_tokens).all() and
                        (ref.rejected_tokens == low.rejected_tokens).all())
    return {
        "n_pairs": len(pairs), "tokens_per_sequence_mean": mean_n, "fp32_seconds": ref_s,
        "bf16_seconds": low_s,
        "float32_matmul_precision": torch.get_float32_matmul_precision(), **stats, **spread,
        "predicted_per_token_error": eps * spread["sigma_z"],
        "predicted_per_token_error_of_sum": eps * spread["sigma_z"] / math.sqrt(mean_n),
        "tolerance": {"mean_abs_per_token": TOL_MEAN_PER_TOKEN, "max_abs_per_token": TOL_MAX_PER_TOKEN,
                      "reason": "bf16 unit roundoff 2^-8 x sqrt(4 L + 1) roundings x logit spread sigma_z; "
                                "see the module docstring"},
        "checks": {"token_counts_equal": counts_equal,
                   "mean_per_token_within_tolerance": stats["mean_abs_per_token"] <= TOL_MEAN_PER_TOKEN,
                   "max_per_token_within_tolerance": stats["max_abs_per_token"] <= TOL_MAX_PER_TOKEN,
                   "margin_mean_per_token_within_tolerance":
                       stats["mean_abs_margin_per_token"] <= TOL_MEAN_PER_TOKEN,
                   "margin_max_per_token_within_tolerance":
                       stats["max_abs_margin_per_token"] <= TOL_MAX_PER_TOKEN},
    }


def section_throughput(ctx: Context) -> dict:
    import numpy as np

    model, plan = ctx.model("bf16"), ctx.plan
    pairs = random_pairs(plan.bench_pairs, plan, model.config.vocab_size, seed=2)
    warm = pairs[: max(2, len(pairs) // 8)]
    engine_logps(model, warm, ctx.budget())
    got, engine_s = timed(lambda: engine_logps(model, pairs, ctx.budget()), ctx.device)
    anchor_logps(model, warm[: plan.anchor_batch], 0, plan.anchor_batch)
    anchor, anchor_s = timed(lambda: anchor_logps(model, pairs, 0, plan.anchor_batch), ctx.device)
    engine_work = executed_flops(model, *engine_rows(pairs, ctx.budget()))
    engine = rate_figures(model, pairs, engine_s, engine_work, ctx.peak)
    base = rate_figures(model, pairs, anchor_s, executed_flops(model, *anchor_rows(pairs, plan.anchor_batch)),
                        ctx.peak)
    anchor = np.asarray(anchor)
    diff = agreement_stats(got.chosen_logp, got.rejected_logp, anchor[:, 0], anchor[:, 1],
                           got.chosen_tokens, got.rejected_tokens)
    return {"dtype": "bfloat16", "n_pairs": len(pairs), "token_budget": ctx.budget(),
            "anchor_batch_pairs": plan.anchor_batch, "peak_tflops": ctx.peak, "engine": engine,
            "anchor": base,
            "speedup_engine_over_anchor": anchor_s / engine_s,
            "engine_vs_anchor_bf16": {k: diff[k] for k in ("max_abs_per_token", "mean_abs_per_token")},
            "checks": {"engine_matches_anchor_within_bf16_tolerance":
                       diff["mean_abs_per_token"] <= TOL_MEAN_PER_TOKEN
                       and diff["max_abs_per_token"] <= TOL_MAX_PER_TOKEN}}


def _recipe(ctx: Context, steps: int):
    import torch

    from dpo_eval.train.config import load_config
    from dpo_eval.train.recipe import DPORecipe

    plan = ctx.plan
    dtype = torch.bfloat16 if ctx.device.type == "cuda" else torch.float32
    shape = {**plan.model, "num_hidden_layers": plan.train_layers}
    folder = save_model_dir(ctx.workdir / "train_model", shape, ctx.device, dtype)
    data = write_word_pairs(ctx.workdir / "train_pairs.jsonl", plan.train_batch * steps, plan, seed=3)
    config = load_config(None, (), policy=folder, data=data, output_dir=str(ctx.workdir / "train_run"),
                         cache_dir=str(ctx.workdir / "cache"), loss="dpo", beta=0.1, learning_rate=1e-5,
                         lr_schedule="constant", warmup_steps=0, batch_size=plan.train_batch, grad_accum=1,
                         max_steps=steps, max_length=None, template="plain", device=str(ctx.device),
                         dtype="auto", show_progress=False, seed=0)
    recipe = DPORecipe(config)
    recipe.setup()
    return recipe


def _recipe_step0(recipe, items) -> dict:
    """The recipe's per-pair rewards and loss on its first batch, before any update (no grad)."""
    import torch

    with torch.no_grad(), recipe._autocast():
        out, logps = recipe._micro_loss(items)
    tokens = (logps.chosen_tokens + logps.rejected_tokens).double()
    margin = (out.chosen_rewards - out.rejected_rewards).double().abs()
    return {"max_abs_reward": float(torch.cat([out.chosen_rewards, out.rejected_rewards]).abs().max()),
            "max_abs_margin_per_token": float((margin / tokens).max()),
            "mean_loss_minus_log2": float(out.losses.double().mean()) - math.log(2)}


def _timed_steps(recipe, ctx: Context, steps: int, batch: int) -> tuple[list[dict], list[float], bool]:
    """recipe.train_step on items [0, batch), [batch, 2 batch) ...: metrics, seconds, weights moved?"""
    import numpy as np

    from dpo_eval.train.metrics_log import reduce_metrics

    probe = next(p for p in recipe.module.parameters() if p.requires_grad)
    before = probe.detach().clone()
    records, seconds = [], []
    for step in range(steps):
        items = np.arange(step * batch, (step + 1) * batch)
        metrics, s = timed(lambda i=items, k=step: recipe.train_step(i, k), ctx.device)
        records.append(reduce_metrics(metrics, recipe.ctx))
        seconds.append(s)
    return records, seconds, bool((probe.detach() != before).any())


def section_train_step(ctx: Context) -> dict:
    """DPORecipe.train_step (forward, DPO loss, backward, clip, AdamW) twice: cold, then warm."""
    import numpy as np
    import torch

    batch, is_cuda = ctx.plan.train_batch, ctx.device.type == "cuda"
    recipe = _recipe(ctx, steps=2)
    try:
        step0 = _recipe_step0(recipe, np.arange(batch))
        if is_cuda:
            torch.cuda.reset_peak_memory_stats(ctx.device)
        records, seconds, changed = _timed_steps(recipe, ctx, 2, batch)
        model, pairs = recipe.module, recipe.data.train[batch: 2 * batch]  # the warm step's pairs
        train_flops = 3 * model_flops(model, pairs)  # forward + backward ~ 3 forwards (no recompute counted)
        is_bf16 = recipe.compute_dtype != torch.float32
        tol = 0.1 * (TOL_MAX_PER_TOKEN if is_bf16 else TOL_FLOAT_NOISE)  # beta x per-token tolerance
        loss, norms = [r["loss"] for r in records], [r["grad_norm"] for r in records]
        return {
            "layers": model.config.num_hidden_layers, "pairs_per_step": batch,
            "param_dtype": str(next(model.parameters()).dtype), "compute_dtype": str(recipe.compute_dtype),
            "autocast": is_cuda and is_bf16, "step_seconds_cold": seconds[0], "step_seconds_warm": seconds[1],
            "sequence_tokens_per_s_warm": sequence_tokens(pairs) / seconds[1],
            "train_mfu_warm": train_flops / seconds[1] / (ctx.peak * 1e12) if ctx.peak else None,
            "loss": loss, "grad_norm": norms,
            "peak_memory_gib": torch.cuda.max_memory_allocated(ctx.device) / 2**30 if is_cuda else None,
            "step0_recipe": {**step0, "tolerance_margin_per_token": tol,
                             "reason": "reference cached in the compute dtype by the engine, policy = "
                                       "float32 master weights (under autocast on CUDA): equal up to that "
                                       "dtype's noise"},
            "checks": {"loss_finite": all(math.isfinite(x) for x in loss),
                       "grad_norm_finite_positive": all(math.isfinite(g) and g > 0 for g in norms),
                       "weights_changed": changed,
                       "step0_margins_within_noise": step0["max_abs_margin_per_token"] <= tol},
        }
    finally:
        recipe.cleanup()


def _pair_sums(model, packed, ctx: Context, grad: bool):
    """packed_logps under the trainer's numerics: bf16 autocast on CUDA, float32 on the CPU."""
    import contextlib

    import torch

    from dpo_eval.engine.logprobs import packed_logps

    is_cuda = ctx.device.type == "cuda"
    cast = torch.autocast("cuda", dtype=torch.bfloat16) if is_cuda else contextlib.nullcontext()
    with cast, torch.set_grad_enabled(grad):
        sums, counts = packed_logps(model, packed)
    return sums.detach().float(), counts.float()


def section_step0(ctx: Context) -> dict:
    """policy = deepcopy(reference): rewards exactly 0 and DPO loss log 2, through the same path."""
    import torch

    from dpo_eval.engine.packing import pack_pairs
    from dpo_eval.train.losses import PairLogps, dpo_loss

    reference = ctx.model("fp32")
    policy = copy.deepcopy(reference).train().requires_grad_(True)
    pairs = random_pairs(ctx.plan.step0_pairs, replace(ctx.plan, response_max=ctx.plan.response_min),
                         reference.config.vocab_size, seed=4)
    packed = pack_pairs(pairs, 0).to(ctx.device)
    ref, counts = _pair_sums(reference, packed, ctx, grad=False)
    results = {}
    for name, grad in (("no_grad", False), ("with_grad", True)):
        pol, _ = _pair_sums(policy, packed, ctx, grad=grad)
        logps = PairLogps(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], counts[:, 0], counts[:, 1])
        out = dpo_loss(logps, beta=0.1)
        rewards = torch.cat([out.chosen_rewards, out.rejected_rewards]).double()
        results[name] = {"max_abs_reward": float(rewards.abs().max()),
                         "fraction_exactly_zero": float((rewards == 0).double().mean()),
                         "max_abs_loss_minus_log2": float((out.losses.double() - math.log(2)).abs().max())}
    del policy
    free_memory()
    is_bf16 = ctx.device.type == "cuda"
    tol = 0.1 * (TOL_STEP0_BF16 if is_bf16 else TOL_FLOAT_NOISE)  # beta * log-ratio tolerance
    loss_tol = tol if is_bf16 else 1e-6  # |loss - log 2| ~ |chosen reward - rejected reward| / 2 <= tol
    return {"n_pairs": len(pairs), "beta": 0.1, **results, "tolerance_reward": tol, "tolerance_loss": loss_tol,
            "checks": {f"{name}_rewards_zero": r["max_abs_reward"] <= tol for name, r in results.items()}
            | {f"{name}_loss_is_log2": r["max_abs_loss_minus_log2"] <= loss_tol for name, r in results.items()}}


def section_judge(ctx: Context) -> dict:
    """LocalJudge on the device: probability mode against the normalised next-token probability, and
    verdict mode (greedy generate) scored or unscored with a reason."""
    import torch

    from dpo_eval.judge.local import LocalJudge, label_token_ids
    from dpo_eval.judge.templates import load_template

    folder = save_model_dir(ctx.workdir / "judge_model", TINY, torch.device("cpu"), torch.float32)
    template = load_template("pairwise")
    judge = LocalJudge(folder, template, device=str(ctx.device), cache_dir=str(ctx.workdir / "cache"))
    (verdict, seconds) = timed(lambda: judge.judge("why", "good yes", "bad no", "probability"), ctx.device)
    text = judge.tokenizer.apply_chat_template(
        [{"role": "user", "content": template.render("why", "good yes", "bad no")}], tokenize=False,
        add_generation_prompt=True)
    ids = torch.tensor([judge.tokenizer(text, add_special_tokens=False)["input_ids"]], device=ctx.device)
    with torch.inference_mode():
        probs = torch.softmax(judge.model(input_ids=ids).logits[0, -1].double(), dim=-1)
    labels = label_token_ids(judge.tokenizer)
    a, b = (float(probs[labels[k]].sum()) for k in ("A", "B"))
    generated = judge.judge("why", "good yes", "bad no", "verdict")
    model_device = next(judge.model.parameters()).device.type
    return {"model_device": model_device, "model_dtype": str(next(judge.model.parameters()).dtype),
            "preference_a": verdict.preference_a, "expected_preference_a": a / (a + b),
            "abs_difference": abs(verdict.preference_a - a / (a + b)), "probability_seconds": seconds,
            "verdict_raw": generated.raw, "verdict_reason": generated.reason,
            "checks": {"on_requested_device": model_device == ctx.device.type,
                       "probability_matches_direct": abs(verdict.preference_a - a / (a + b)) <= 1e-6,
                       "verdict_scored_or_has_reason":
                           (generated.preference_a is None) == (generated.reason is not None)}}


SECTIONS = {"agreement": section_agreement, "throughput": section_throughput, "step0": section_step0,
            "flex_scoring": section_flex_scoring, "train_step": section_train_step,
            "train_paths": lambda ctx: section_train_paths(ctx, _recipe), "judge": section_judge}  # in this order
BIG_MODEL_SECTIONS = ("agreement", "throughput", "step0")  # the 1B-shaped model is freed after these


def run_section(name: str, fn, ctx: Context) -> dict:
    """fn(ctx) with its wall time; an exception becomes status "failed" with the traceback text."""
    print(f"[gpu_check] {name} ...", flush=True)
    start = time.perf_counter()
    try:
        result = {"status": "ok", **fn(ctx)}
    except Exception:  # noqa: BLE001 - recorded, so the other sections still run
        result = {"status": "failed", "error": traceback.format_exc()}
        free_memory()
    result["wall_seconds"] = time.perf_counter() - start
    checks = result.get("checks", {})
    failed = [k for k, ok in checks.items() if not ok]
    verdict = f"FAILED checks: {', '.join(failed)}" if failed else f"{len(checks)} checks passed"
    print(f"[gpu_check] {name}: {result['status']} in {result['wall_seconds']:.1f}s"
          + ("" if result["status"] == "failed" else f"; {verdict}"), flush=True)
    if result["status"] == "failed":
        print(result["error"], flush=True)
    return result


def summary_lines(report: dict) -> list[str]:
    """The headline figures, one line each."""
    sections = report["sections"]
    lines = [f"device: {report['environment']['device_name']}  "
             f"peak bf16 assumed: {report['peak_tflops']} TFLOP/s"]
    a = sections.get("agreement", {})
    if a.get("status") == "ok":
        lines.append(f"bf16 vs fp32 per token: mean {a['mean_abs_per_token']:.2e} "
                     f"max {a['max_abs_per_token']:.2e} "
                     f"(tol {TOL_MEAN_PER_TOKEN}/{TOL_MAX_PER_TOKEN}); margins: mean "
                     f"{a['mean_abs_margin_per_token']:.2e} max {a['max_abs_margin_per_token']:.2e}, "
                     "sign agreement "
                     f"{a['margin_sign_agreement']:.3f}; sigma_z {a['sigma_z']:.3f}")
    t = sections.get("throughput", {})
    if t.get("status") == "ok":
        pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        for key in ("engine", "anchor"):
            r = t[key]
            lines.append(f"{key:7s} {r['sequence_tokens_per_s']:12.0f} seq tok/s  MFU {pct(r['mfu'])}  "
                         f"HFU {pct(r['hfu'])}")
        lines.append(f"engine / anchor speed: {t['speedup_engine_over_anchor']:.2f}x")
    s = sections.get("train_step", {})
    if s.get("status") == "ok":
        lines.append(f"train step ({s['layers']} layers, {s['pairs_per_step']} pairs): "
                     f"cold {s['step_seconds_cold']:.2f}s "
                     f"warm {s['step_seconds_warm']:.3f}s loss {s['loss']} grad_norm {s['grad_norm']}")
    lines += flex_summary_lines(sections)
    lines.append(f"all checks passed: {report['all_checks_passed']}")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny model and sizes (a CPU test in seconds)")
    ap.add_argument("--out", default="gpu_check.json", help="where to write the JSON report")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="comma-separated subset of " + ",".join(SECTIONS))
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="peak bf16 TFLOP/s (default: from the device name)")
    ap.add_argument("--pairs", type=int, default=None, help="pairs for the agreement section")
    ap.add_argument("--bench-pairs", type=int, default=None, help="pairs for the throughput section")
    ap.add_argument("--train-layers", type=int, default=None, help="decoder layers of the trained model")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, then removed)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import_mode = bootstrap_imports()
    import torch

    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}: choose from {', '.join(SECTIONS)}")
    device = torch.device(args.device)
    plan = make_plan(args.tiny)
    overrides = {"n_pairs": args.pairs, "bench_pairs": args.bench_pairs, "train_layers": args.train_layers}
    plan = replace(plan, **{k: v for k, v in overrides.items() if v is not None})
    env = environment(device, import_mode)
    peak = args.peak_tflops or (peak_tflops(env["device_name"]) if device.type == "cuda" else None)
    print(f"[gpu_check] {env}; peak bf16 {peak} TFLOP/s "
          f"({'given' if args.peak_tflops else 'from the device name'})", flush=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check_"))
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(plan, device, workdir, peak, {})
    sections = {}
    try:
        for name, fn in SECTIONS.items():
            if name in args.sections.split(","):
                sections[name] = run_section(name, fn, ctx)
            if name == BIG_MODEL_SECTIONS[-1]:
                ctx.drop_models()
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    passed = all(s["status"] == "ok" and all(s.get("checks", {}).values()) for s in sections.values())
    report = {"schema_version": SCHEMA_VERSION, "environment": env, "plan": asdict(plan), "peak_tflops": peak,
              "sections": sections, "all_checks_passed": passed}
    from dpo_eval.jsonio import write_json

    write_json(args.out, report)
    try:
        print("\n".join(summary_lines(report)), flush=True)
    except (KeyError, TypeError, ValueError) as error:  # the JSON is written; a summary gap must not hide it
        print(f"[gpu_check] no summary ({error!r}); see the JSON", flush=True)
    print(f"[gpu_check] wrote {args.out}", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
