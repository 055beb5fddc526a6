"""benchmarks/gpu_check.py: its tiny CPU run (from a source tree, without datasets/peft/trl/gguf), its FLOP
formulas against torch's FlopCounterMode, its statistics against planted values, its failure handling."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
BLOCKED = ("datasets", "peft", "trl", "gguf")
MAY_BE_NULL = {"peak_memory_gib", "cuda", "verdict_reason", "goal_mfu"}  # CPU run: no CUDA; a scored verdict has
# no reason; the tiny shape has no MFU goal

# Runs the script as the GPU box would: not pip-installed (the editable finder removed, cwd elsewhere) and
# with datasets/peft/trl/gguf failing to import; prints the blocked imports the run attempted.
CLEAN_RUN = r"""
import importlib.abc, importlib.machinery, importlib.util, json, runpy, sys
BLOCKED = {blocked!r}
attempted = []

class Missing(importlib.abc.Loader):
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        attempted.append(module.__name__)
        raise ModuleNotFoundError(f"No module named {{module.__name__!r}} (blocked: not on the GPU box)")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, Missing())
        return None

sys.meta_path = [Block()] + [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
if importlib.util.find_spec("dpo_eval") is not None:
    raise SystemExit("dpo_eval is still importable: this run would not test the source-tree path")
sys.argv = [{script!r}, "--tiny", "--device", "cpu", "--out", {out!r}, "--peak-tflops", "1"]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as done:
    code = done.code
print("BLOCKED-IMPORTS " + json.dumps(attempted + [m for m in sys.modules if m.split(".")[0] in BLOCKED]))
sys.exit(code)
"""


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    out = tmp / "report.json"
    code = CLEAN_RUN.format(blocked=BLOCKED, script=str(SCRIPT), out=str(out))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=300)
    report = json.loads(out.read_text()) if out.exists() else None
    return done, report


def test_tiny_cpu_run_passes_every_section_from_a_source_tree(tiny_run):
    done, report = tiny_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert report["environment"]["dpo_eval_imported_from"] == "source tree"
    assert list(report["sections"]) == ["agreement", "throughput", "step0", "flex_scoring", "train_step",
                                        "train_paths", "judge"]
    for name, section in report["sections"].items():
        assert section["status"] == "ok", (name, section.get("error"))
        assert section["checks"] and all(section["checks"].values()), (name, section["checks"])
    assert report["all_checks_passed"] is True


def test_tiny_run_imports_none_of_the_packages_the_gpu_box_may_lack(tiny_run):
    done, _ = tiny_run
    line = next(x for x in done.stdout.splitlines() if x.startswith("BLOCKED-IMPORTS "))
    assert json.loads(line.removeprefix("BLOCKED-IMPORTS ")) == []


def _leaves(value, key=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v, key)
    else:
        yield key, value


def test_tiny_run_numbers_are_finite(tiny_run):
    _, report = tiny_run
    leaves = list(_leaves(report["sections"]))
    assert sum(isinstance(v, float) for _, v in leaves) > 50
    for key, value in leaves:
        if value is None:
            assert key in MAY_BE_NULL, key
        elif isinstance(value, float):
            assert math.isfinite(value), key


def test_tiny_run_figures_follow_their_formulas(tiny_run):
    _, report = tiny_run
    sections = report["sections"]
    throughput = sections["throughput"]
    for method in ("engine", "anchor"):
        r = throughput[method]
        assert r["sequence_tokens_per_s"] == pytest.approx(r["sequence_tokens"] / r["seconds"])
        assert r["mfu"] == pytest.approx(r["model_flops"] / r["seconds"] / 1e12)
        assert r["hfu"] == pytest.approx(r["executed_flops"] / r["seconds"] / 1e12)
    assert throughput["speedup_engine_over_anchor"] == pytest.approx(
        throughput["anchor"]["seconds"] / throughput["engine"]["seconds"])
    # the planned pairs: prompt 12, chosen = rejected length in [4, 16], 16 pairs
    assert 16 * 2 * (12 + 4) <= throughput["engine"]["sequence_tokens"] <= 16 * 2 * (12 + 16)
    for mode in ("no_grad", "with_grad"):
        assert sections["step0"][mode]["max_abs_loss_minus_log2"] <= 1e-6
    assert abs(sections["train_step"]["loss"][0] - math.log(2)) < 1e-4  # policy = reference at step 0


def test_tiny_run_flex_sections(tiny_run):
    """The flex path ran on the CPU (asked for), equals the dense path per token in float32, and every
    profile lists its top ops by share; the CPU cannot run flex backward, which the report says."""
    _, report = tiny_run
    tiny = report["sections"]["flex_scoring"]["shapes"]["tiny"]
    assert tiny["flex_used"] and tiny["dense_used_dense"]
    assert tiny["flex_vs_dense"]["max_abs_seq"] <= 1e-5
    for method in ("flex", "dense", "anchor"):
        assert tiny[method]["mfu"] == pytest.approx(tiny[method]["model_flops"] / tiny[method]["seconds"] / 1e12)
    assert tiny["speedup_flex_over_dense"] == pytest.approx(tiny["dense"]["seconds"] / tiny["flex"]["seconds"])
    for profile in tiny["profile"].values():
        shares = [k["share"] for k in profile["top"]]
        assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
        assert profile["total_ms"] == pytest.approx(profile["top"][0]["self_ms"] / shares[0])
    train = report["sections"]["train_paths"]
    assert "no backward on the CPU" in train["flex"]["skipped"]
    assert train["dense"]["step_seconds_warm"] > 0 and train["dense"]["profile"]["top"]


# ------------------------------------------------------------------------------------------ units


@pytest.fixture(scope="module")
def gc_mod():
    return load_script()


@pytest.fixture(scope="module")
def parts(gc_mod):
    return sys.modules["gpu_check_parts"]  # imported by gpu_check (benchmarks/ is on sys.path then)


@pytest.fixture(scope="module")
def tiny_model(gc_mod):
    return gc_mod.build_llama(gc_mod.TINY, torch.device("cpu"))


def test_executed_flops_equal_torch_flop_counter(gc_mod, tiny_model):
    """Matmul FLOPs counted by torch (math SDPA, so attention is counted too) equal the formula."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    pairs = gc_mod.random_pairs(7, gc_mod.make_plan(True), 512, seed=5)
    runs = {"engine": (lambda: gc_mod.engine_logps(tiny_model, pairs, 200), gc_mod.engine_rows(pairs, 200)),
            "anchor": (lambda: gc_mod.anchor_logps(tiny_model, pairs, 0, 3), gc_mod.anchor_rows(pairs, 3))}
    for fn, rows in runs.values():
        counter = FlopCounterMode(display=False)
        with sdpa_kernel(SDPBackend.MATH), counter:
            fn()
        assert counter.get_total_flops() == gc_mod.executed_flops(tiny_model, *rows)


def test_bf16_copy_rounds_weights_and_keeps_float32_buffers(gc_mod, tiny_model):
    low = gc_mod.bf16_copy(tiny_model)
    for (name, p), (_, q) in zip(tiny_model.named_parameters(), low.named_parameters(), strict=True):
        assert q.dtype == torch.bfloat16 and torch.equal(q, p.to(torch.bfloat16)), name
    assert low.lm_head.weight is low.model.embed_tokens.weight  # still tied
    buffers = dict(low.named_buffers())
    assert buffers and all(b.dtype == torch.float32 for b in buffers.values())
    assert next(tiny_model.parameters()).dtype == torch.float32  # the original is untouched


def test_model_flops_by_hand(gc_mod, parts, tiny_model):
    from dpo_eval.tokenization import TokenizedPair

    d, i, layers, heads, kv_heads, vocab = 64, 128, 2, 4, 2, 512
    hd = d // heads
    n = layers * (d * d + 2 * d * kv_heads * hd + d * d + 3 * d * i)
    assert parts.linear_params(tiny_model) == n
    pair = TokenizedPair("x", "s", (1, 2, 3), (4, 5), (6,))  # sequences of 5 (2 response) and 4 (1) tokens
    expected = sum(2 * n * t + 2 * vocab * d * r + 2 * layers * d * t * t for t, r in ((5, 2), (4, 1)))
    assert gc_mod.model_flops(tiny_model, [pair]) == expected


def test_anchor_logps_equals_the_benchmarks_anchor(gc_mod, tiny_model):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from anchor import anchor_logps as reference_anchor

    pairs = gc_mod.random_pairs(5, gc_mod.make_plan(True), 512, seed=6)
    ours = np.array(gc_mod.anchor_logps(tiny_model, pairs, 0, 2))
    np.testing.assert_allclose(ours, np.array(reference_anchor(tiny_model, pairs, 0, 2)), atol=1e-5)


def test_agreement_stats_on_planted_differences(gc_mod):
    # sequence deltas: chosen 0.2, 0.0; rejected 0.0, 0.6; tokens chosen 2, 4; rejected 4, 3
    stats = gc_mod.agreement_stats([-10.2, -20.0], [-8.0, -5.6], [-10.0, -20.0], [-8.0, -6.2], [2, 4], [4, 3])
    assert stats["max_abs_seq"] == pytest.approx(0.6)
    assert stats["mean_abs_seq"] == pytest.approx(0.8 / 4)
    assert stats["max_abs_per_token"] == pytest.approx(0.2)  # 0.2 / 2 and 0.6 / 3
    assert stats["mean_abs_per_token"] == pytest.approx((0.1 + 0 + 0 + 0.2) / 4)
    # margins a: -2.2, -14.4; b: -2.0, -13.8 -> |delta| 0.2, 0.6 over 6 and 7 tokens
    assert stats["max_abs_margin"] == pytest.approx(0.6)
    assert stats["max_abs_margin_per_token"] == pytest.approx(0.6 / 7)
    assert stats["mean_abs_margin_per_token"] == pytest.approx((0.2 / 6 + 0.6 / 7) / 2)
    assert stats["margin_sign_agreement"] == 1.0


def test_logit_spread_recovers_a_planted_sigma(gc_mod):
    rng = np.random.default_rng(0)
    n_c, n_r = rng.integers(20, 200, size=2000), rng.integers(20, 200, size=2000)
    sums = lambda n: np.array([rng.normal(-6.0, 0.7, size=k).sum() for k in n])  # noqa: E731
    got = gc_mod.logit_spread(sums(n_c), sums(n_r), n_c, n_r)
    assert got["mean_logp_per_token"] == pytest.approx(-6.0, abs=0.01)
    assert got["sigma_z"] == pytest.approx(0.7, rel=0.03)


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                        ("NVIDIA H100 NVL", 835.0), ("NVIDIA H200", 989.0), ("NVIDIA A100", None)])
def test_peak_from_device_name(gc_mod, name, peak):
    assert gc_mod.peak_tflops(name) == peak


def test_a_failing_section_is_recorded_and_the_others_still_run(gc_mod, tmp_path, monkeypatch):
    def broken(ctx):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(gc_mod, "SECTIONS", {"agreement": broken, "throughput": lambda ctx: {"checks": {"x": True}}})
    out = tmp_path / "r.json"
    assert gc_mod.main(["--device", "cpu", "--out", str(out), "--sections", "agreement,throughput"]) == 1
    report = json.loads(out.read_text())
    assert report["sections"]["agreement"]["status"] == "failed"
    assert "RuntimeError: planted failure" in report["sections"]["agreement"]["error"]
    assert report["sections"]["throughput"]["status"] == "ok"
    assert report["all_checks_passed"] is False


def test_unknown_section_is_refused(gc_mod, tmp_path):
    with pytest.raises(SystemExit, match="unknown sections"):
        gc_mod.main(["--device", "cpu", "--out", str(tmp_path / "r.json"), "--sections", "agreement,typo"])


def test_build_bf16_is_bfloat16_with_float32_rope(gc_mod):
    flex_mod = sys.modules["gpu_check_flex"]
    model = flex_mod.build_bf16(gc_mod.TINY, torch.device("cpu"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert torch.get_default_dtype() == torch.float32  # restored


def test_8b_shape_has_llama_3_1_8b_size(gc_mod, parts):
    """8.03B parameters: the published Llama-3.1-8B count, from the shape alone (meta device, no memory)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**sys.modules["gpu_check_flex"].LLAMA_8B))
    assert sum(p.numel() for p in model.parameters()) == 8_030_261_248
