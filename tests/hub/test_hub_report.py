"""`dpo-eval report` on a LoRA run whose base model exists only on the test Hub (adapter_config.json names it
by Hub id), then again with the Hub gone and HF_HUB_OFFLINE=1, from the cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fake_hub import FakeHub
from hub_repos import folder_files, go_offline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from conftest import save_tiny_model, write_text_pairs  # noqa: E402  (tests/conftest.py)
from tiny_run import FAST, JUDGE_DIR, RULE_JUDGE  # noqa: E402  (tests/report/tiny_run.py)

from dpo_eval.cli import main  # noqa: E402

pytest_plugins = ["hub_repos"]  # the `hub` fixture


def lora_checkpoint(folder: Path, base_folder: Path, seed: int) -> Path:
    """A LoRA adapter of the base (non-zero, seeded), saved with its config naming the base as ``org/base``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_folder),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "org/base"}))
    return folder


def report(args: list[str]):
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(JUDGE_DIR))
        return CliRunner().invoke(main, ["report", *args, "--judge", RULE_JUDGE, *FAST])


def test_report_on_a_lora_run_whose_base_is_only_on_the_hub(hub: FakeHub, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("peft")
    base = Path(save_tiny_model(tmp_path / "base_build", seed=0))
    commit = hub.add_commit("org/base", folder_files(base))
    run = tmp_path / "lora_run"
    for step in (1, 2):
        lora_checkpoint(run / f"checkpoint-{step}", base, seed=step)
    pairs = write_text_pairs(tmp_path / "pairs.jsonl", n=6, seed=3)
    out, cache = tmp_path / "report", tmp_path / "cache"
    result = report([str(run), "--data", pairs, "--out", str(out), "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    snapshot = tmp_path / "hf_home" / "hub" / "models--org--base" / "snapshots" / commit
    assert (snapshot / "model.safetensors").is_file()
    results = json.loads((out / "results.json").read_text())
    assert "org/base" in json.dumps(results)
    hub.stop()
    go_offline(monkeypatch)
    again = report([str(run), "--data", pairs, "--out", str(tmp_path / "report2"), "--cache-dir", str(cache)])
    assert again.exit_code == 0, again.output


def test_report_with_a_hub_dataset_as_data(hub: FakeHub, tmp_path: Path) -> None:
    """--data org/pairs --split test: the split is written once into the store (keyed by repo@commit:split) and
    the report runs on it; in a fresh process, as datasets reads HF_ENDPOINT / HF_HOME when imported."""
    import io
    import os
    import subprocess

    import pyarrow as pa
    import pyarrow.parquet as pq

    pytest.importorskip("peft")
    base = Path(save_tiny_model(tmp_path / "base_build", seed=0))
    hub.add_commit("org/base", folder_files(base))
    lora_checkpoint(tmp_path / "run" / "checkpoint-1", base, seed=1)
    rows = [json.loads(line) for line in Path(write_text_pairs(tmp_path / "p.jsonl", n=6, seed=3)).read_text().splitlines()]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    commit = hub.add_commit("org/pairs", {"data/test-0.parquet": buffer.getvalue(),
                                          "data/train-0.parquet": buffer.getvalue()}, kind="datasets")
    out = tmp_path / "report"
    env = {**os.environ, "HF_HUB_OFFLINE": "0",
           "PYTHONPATH": os.pathsep.join([str(JUDGE_DIR), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "dpo_eval.cli", "report", str(tmp_path / "run"), "--data", "org/pairs",
                           "--split", "test", "--judge", RULE_JUDGE, "--out", str(out),
                           "--cache-dir", str(tmp_path / "cache"), *FAST],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    stored = list((out / "store" / "hub_pairs").glob("*/rows.jsonl"))
    assert len(stored) == 1 and [json.loads(line) for line in stored[0].read_text().splitlines()] == rows
    results = json.loads((out / "results.json").read_text())
    assert f"org/pairs@{commit}:test" in json.dumps(results["provenance"]["data"])
