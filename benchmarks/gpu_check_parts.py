"""Pieces of benchmarks/gpu_check.py: model and data builders, FLOP counts, agreement statistics.

The formulas and tolerances are explained in gpu_check.py's docstring. dpo_eval is imported inside
the functions, after gpu_check has made it importable.
"""

from __future__ import annotations

import copy
import gc
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

BF16_UNIT_ROUNDOFF = 2.0 ** -8  # 8 significant bits
PEAKS_TFLOPS = (("H200", 989.0), ("H100 PCIE", 756.0), ("H100 NVL", 835.0), ("H100", 989.0))
LLAMA_1B = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
                rms_norm_eps=1e-5, max_position_embeddings=4096)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=512, tie_word_embeddings=True, max_position_embeddings=512)
WORDS = ("the a cat dog sat ran on mat log is good bad yes no why how what tell me about it please "
         "sure sorry i can not help with that here you go A B").split()


@dataclass(frozen=True)
class Plan:
    """Sizes of one run (GPU defaults; `tiny` shrinks everything for a CPU test)."""

    model: dict
    n_pairs: int = 256  # section 1
    prompt_len: int = 128
    response_min: int = 64
    response_max: int = 256
    bench_pairs: int = 512  # section 2
    anchor_batch: int = 8  # pairs per anchor forward
    token_budget: int | None = None  # None: the engine's default for the device
    train_layers: int = 4
    train_batch: int = 4
    step0_pairs: int = 8


def make_plan(is_tiny: bool) -> Plan:
    if not is_tiny:
        return Plan(model=LLAMA_1B)
    return Plan(model=TINY, n_pairs=16, prompt_len=12, response_min=4, response_max=16, bench_pairs=16,
                anchor_batch=4, token_budget=256, train_layers=2, train_batch=2, step0_pairs=4)


# ------------------------------------------------------------------------------------------ helpers


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """(fn(), seconds), with the device synchronised on both sides."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a known accelerator, from its name; None when unknown."""
    name = device_name.upper()
    for key, value in PEAKS_TFLOPS:
        if key in name:
            return value
    return None


def build_llama(model_cfg: dict, device, seed: int = 0):
    """A random-init LlamaForCausalLM (float32, eval mode), initialised directly on device."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**model_cfg, attn_implementation="sdpa")
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.float().eval()


def bf16_copy(model):
    """A bfloat16 copy of the weights; float32 buffers (RoPE's inv_freq) stay float32, as load_model
    keeps them (model.to(bfloat16) would round the rotary frequencies too)."""
    import torch

    low = copy.deepcopy(model)
    for param in low.parameters():  # tied weights are one Parameter, converted once
        param.data = param.data.to(torch.bfloat16)
    return low


def random_pairs(n: int, plan: Plan, vocab: int, seed: int) -> list:
    """TokenizedPairs of random ids in [1, vocab): prompt_len prompt tokens, chosen and rejected of one
    length drawn uniformly in [response_min, response_max]."""
    import numpy as np

    from dpo_eval.tokenization import TokenizedPair

    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        length = int(rng.integers(plan.response_min, plan.response_max + 1))
        ids = rng.integers(1, vocab, size=plan.prompt_len + 2 * length).tolist()
        pairs.append(TokenizedPair(str(i), "synthetic", tuple(ids[:plan.prompt_len]),
                                   tuple(ids[plan.prompt_len: plan.prompt_len + length]),
                                   tuple(ids[plan.prompt_len + length:])))
    return pairs


def linear_params(model) -> int:
    """Weights of the nn.Linear layers inside the decoder blocks (N in the FLOP formulas)."""
    import torch

    return sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))


def attention_width(config) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_attention_heads * head_dim


def model_flops(model, pairs) -> float:
    """Forward FLOPs of the work asked: each (prompt + response) as its own causal sequence."""
    cfg, n = model.config, linear_params(model)
    a, d, v, layers = attention_width(cfg), cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    total = 0.0
    for p in pairs:
        for response in (p.chosen_ids, p.rejected_ids):
            t = len(p.prompt_ids) + len(response)
            total += 2 * n * t + 2 * v * d * len(response) + 2 * layers * a * t * t
    return total


def executed_flops(model, rows_by_batch: list[list[int]], projected: int) -> float:
    """Forward FLOPs the kernels run: rows_by_batch holds each batch's row lengths (padded to the max)."""
    cfg, n = model.config, linear_params(model)
    a, d, v, layers = attention_width(cfg), cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    total = 2.0 * v * d * projected
    for rows in rows_by_batch:
        width = max(rows)
        total += 2 * n * len(rows) * width + 4 * layers * a * len(rows) * width * width
    return total


def engine_rows(pairs, budget: int) -> tuple[list[list[int]], int]:
    """The engine's batches as row lengths (same planner as the runner) and the positions it projects."""
    from dpo_eval.engine.batching import plan_batches

    lengths = [p.packed_length for p in pairs]
    batches = plan_batches(lengths, budget)
    rows = [[sum(lengths[i] for i in row) for row in batch] for batch in batches]
    return rows, sum(len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)


def anchor_rows(pairs, batch_size: int) -> tuple[list[list[int]], int]:
    """The anchor's batches (2 sequences per pair, padded) and positions projected (all of them)."""
    rows = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start: start + batch_size]
        width = max(len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in chunk)
        rows.append([width] * (2 * len(chunk)))
    return rows, sum(len(r) * max(r) for r in rows)


def sequence_tokens(pairs) -> int:
    """|prompt + chosen| + |prompt + rejected| summed over pairs (the same count for every method)."""
    return sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)


def anchor_logps(model, pairs, pad_id: int, batch_size: int) -> list[tuple[float, float]]:
    """benchmarks/anchor.py's method (TRL/RewardBench style) with its tensors on the model's device."""
    import torch

    device = next(model.parameters()).device
    out: list[tuple[float, float]] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start: start + batch_size]
        seqs = [p.prompt_ids + p.chosen_ids for p in chunk] + [p.prompt_ids + p.rejected_ids for p in chunk]
        plens = [len(p.prompt_ids) for p in chunk] * 2
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        loss_mask = torch.zeros((len(seqs), width), dtype=torch.bool)
        for row, (seq, plen) in enumerate(zip(seqs, plens)):
            ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
            loss_mask[row, plen: len(seq)] = True
        ids, attention, loss_mask = ids.to(device), attention.to(device), loss_mask.to(device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=attention).logits
            token = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(2, ids[:, 1:, None]).squeeze(2)
            sums = (token * loss_mask[:, 1:]).sum(dim=1).double().cpu().tolist()
        out += [(sums[i], sums[len(chunk) + i]) for i in range(len(chunk))]
    return out


def agreement_stats(a_chosen, a_rejected, b_chosen, b_rejected, n_chosen, n_rejected) -> dict:
    """How far log-probs a are from b: per sequence, per token (|delta| / n) and for margins."""
    import numpy as np

    a_c, a_r, b_c, b_r = (np.asarray(x, dtype=np.float64)
                          for x in (a_chosen, a_rejected, b_chosen, b_rejected))
    n_c, n_r = np.asarray(n_chosen, dtype=np.float64), np.asarray(n_rejected, dtype=np.float64)
    seq = np.concatenate([np.abs(a_c - b_c), np.abs(a_r - b_r)])
    per_token = seq / np.concatenate([n_c, n_r])
    margin_a, margin_b = a_c - a_r, b_c - b_r
    dm = np.abs(margin_a - margin_b)
    return {"max_abs_seq": float(seq.max()), "mean_abs_seq": float(seq.mean()),
            "max_abs_per_token": float(per_token.max()), "mean_abs_per_token": float(per_token.mean()),
            "max_abs_margin": float(dm.max()), "mean_abs_margin": float(dm.mean()),
            "max_abs_margin_per_token": float((dm / (n_c + n_r)).max()),
            "mean_abs_margin_per_token": float((dm / (n_c + n_r)).mean()),
            "margin_sign_agreement": float(np.mean(np.sign(margin_a) == np.sign(margin_b))),
            "margin_correlation": float(np.corrcoef(margin_a, margin_b)[0, 1]) if len(dm) > 1 else 1.0}


def logit_spread(chosen, rejected, n_chosen, n_rejected) -> dict:
    """Mean log-prob per token and sigma_z, the per-token spread, from sequence sums alone:
    with independent tokens var(s_i - n_i mu) = n_i sigma^2, so sigma = std((s_i - n_i mu) / sqrt(n_i))."""
    import numpy as np

    s = np.concatenate([np.asarray(chosen, float), np.asarray(rejected, float)])
    n = np.concatenate([np.asarray(n_chosen, float), np.asarray(n_rejected, float)])
    mu = s.sum() / n.sum()
    return {"mean_logp_per_token": float(mu), "sigma_z": float(np.std((s - n * mu) / np.sqrt(n)))}


def word_tokenizer():
    """A whitespace word-level tokenizer with EOS, PAD, a chat template and the labels A and B (offline)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>", "<|user|>", "<|assistant|>"]
    vocab = {w: i for i, w in enumerate(specials + list(WORDS))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<bos>", eos_token="<eos>")
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <eos> {% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|> {% endif %}")
    return tok


def save_model_dir(folder: Path, model_cfg: dict, device, dtype) -> str:
    """A random-init Llama of model_cfg saved in dtype with the word tokenizer; returns the folder."""
    model = build_llama(model_cfg, device).to(dtype)
    model.save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    del model
    free_memory()
    return str(folder)


def write_word_pairs(path: Path, n: int, plan: Plan, seed: int) -> str:
    """Plain-text pairs of random words (one token each): plan.prompt_len-word prompts, responses of
    plan.response_min..response_max words."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = lambda k: " ".join(rng.choice(WORDS[:-2], size=k))  # noqa: E731
    size = lambda: int(rng.integers(plan.response_min, plan.response_max + 1))  # noqa: E731
    rows = [{"id": f"p{i}", "prompt": words(plan.prompt_len) + " ", "chosen": words(size()),
             "rejected": words(size())} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def engine_logps(model, pairs, budget: int):
    """The engine's per-pair log-probs, no disk cache (score_with_cache with cache=None)."""
    from dpo_eval.engine.runner import score_with_cache

    return score_with_cache(lambda: model, pairs, None, pad_id=0, token_budget=budget, show_progress=False)


def rate_figures(model, pairs, seconds: float, executed: float, peak: float | None) -> dict:
    """Speed of one method: sequence tokens/s, MFU (model FLOPs) and HFU (executed FLOPs) against peak."""
    tokens = sequence_tokens(pairs)
    useful = model_flops(model, pairs)
    per_s = lambda flops: flops / seconds / (peak * 1e12) if peak else None  # noqa: E731
    return {"seconds": seconds, "sequence_tokens": tokens, "sequence_tokens_per_s": tokens / seconds,
            "model_flops": useful, "executed_flops": executed, "mfu": per_s(useful), "hfu": per_s(executed)}


def environment(device, import_mode: str) -> dict:
    import torch
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": str(device), "device_name": name, "torch": torch.__version__,
            "transformers": transformers.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "dpo_eval_imported_from": import_mode, "threads": torch.get_num_threads()}
