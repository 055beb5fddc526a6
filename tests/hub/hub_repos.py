"""For the Hub tests: the `hub` fixture (a running test Hub, the environment pointed at it) and tiny repos to serve.

Test modules take the fixture with `pytest_plugins = ["hub_repos"]`; no conftest here, so that `conftest`
stays tests/conftest.py for the modules that import it. PYTEST_DONT_REWRITE (imported before it is registered)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from dpo_eval.models import hub as hub_lib


def tiny_model(seed: int) -> LlamaForCausalLM:
    """A 2-layer random Llama (vocab 64)."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer of 64 tokens built without any download."""
    vocab = {f"w{i}": i for i in range(61)} | {"<unk>": 61, "<s>": 62, "</s>": 63}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path: what a repo commit holds."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def model_files(tmp: Path, seed: int) -> dict[str, bytes]:
    """The files of a saved tiny model and tokenizer, plus a README and pickled weights no one should fetch."""
    folder = tmp / f"model-{seed}"
    tiny_model(seed).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    files = folder_files(folder)
    files["README.md"] = b"# tiny\n"
    files["pytorch_model.bin"] = b"pickled weights: never downloaded"
    return files


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A running test Hub, with HF_ENDPOINT pointed at it, HF_HOME in tmp, online, and no token."""
    fake = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "hf_home" / "no_token"))
    go_online(monkeypatch)
    yield fake
    fake.stop()
    hub_lib._download.cache_clear()


def go_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=0, in the environment and in huggingface_hub's constants (read at its import)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    hub_lib._download.cache_clear()


def go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1, as go_online, and a new process's view (no memo of earlier resolutions)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    hub_lib._download.cache_clear()


def adapter_files(tmp: Path, base_repo: str, base_seed: int) -> dict[str, bytes]:
    """A tiny LoRA adapter (non-zero B, so it changes the logits) whose config names ``base_repo``."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(7)
    peft_model = get_peft_model(tiny_model(base_seed), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                                  init_lora_weights=False))
    folder = tmp / "adapter"
    peft_model.save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_repo
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder_files(folder)
