"""Models named by Hub id, against the test Hub (tests/hub/fake_hub.py): download, fingerprint, cache reuse
offline, revision pinning, and the one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub
from hub_repos import adapter_files, go_offline, go_online, model_files, tiny_model

from dpo_eval import fingerprint as fingerprint_lib
from dpo_eval.errors import UserError
from dpo_eval.fingerprint import combine_fingerprints
from dpo_eval.models import identify_model, load_model, load_tokenizer
from dpo_eval.models.identify import config_digest

pytest_plugins = ["hub_repos"]  # the `hub` fixture
CPU = torch.device("cpu")
IDS = torch.tensor([[1, 5, 9, 17, 33, 2]])


def expected_fingerprint(files: dict[str, bytes], repo: str, commit: str) -> str:
    """The fingerprint written out: the repo@commit, and each weight file's name with the Hub's sha256."""
    weights = hashlib.blake2b(digest_size=16)
    for name in sorted(n for n in files if n.endswith(".safetensors")):
        weights.update(f"{name}\0sha256:{hashlib.sha256(files[name]).hexdigest()}\n".encode())
    config = config_digest(json.loads(files["config.json"]))
    return combine_fingerprints(weights=weights.hexdigest(), config=config, attn_implementation="sdpa",
                                hub=f"{repo}@{commit}")


def test_a_hub_model_downloads_only_what_it_needs_and_loads(hub: FakeHub, tmp_path: Path) -> None:
    files = model_files(tmp_path, seed=0)
    commit = hub.add_commit("org/tiny", files)
    identity = identify_model("org/tiny", cache_dir=tmp_path / "cache")
    snapshot = Path(identity.resolved)
    assert snapshot.name == commit and snapshot.is_relative_to(tmp_path / "hf_home")
    assert "README.md" not in os.listdir(snapshot) and "pytorch_model.bin" not in os.listdir(snapshot)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(snapshot))
    assert identity.kind == "pretrained"
    assert identity.fingerprint == expected_fingerprint(files, "org/tiny", commit)
    loaded = load_model("org/tiny", device=CPU, dtype=torch.float32, cache_dir=tmp_path / "cache")
    with torch.no_grad():
        assert torch.equal(loaded.model(IDS).logits, tiny_model(0)(IDS).logits)
    assert loaded.tokenizer is not None and load_tokenizer("org/tiny", cache_dir=tmp_path / "cache").vocab_size == 64


def test_lfs_weights_are_not_rehashed(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_commit("org/tiny", model_files(tmp_path, seed=0))
    hashed: list[str] = []
    real_hash = fingerprint_lib.hash_file
    monkeypatch.setattr(fingerprint_lib, "hash_file", lambda p: hashed.append(Path(p).name) or real_hash(p))
    identify_model("org/tiny", cache_dir=tmp_path / "cache")
    assert not [name for name in hashed if name.endswith(".safetensors")]


def test_the_cache_serves_offline_with_the_hub_gone(hub: FakeHub, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_commit("org/tiny", model_files(tmp_path, seed=0))
    online = identify_model("org/tiny", cache_dir=tmp_path / "cache")
    hub.stop()
    served = len(hub.requests)
    go_offline(monkeypatch)
    offline = identify_model("org/tiny", cache_dir=tmp_path / "cache")
    assert offline == online and len(hub.requests) == served
    loaded = load_model("org/tiny", device=CPU, dtype=torch.float32, cache_dir=tmp_path / "cache")
    with torch.no_grad():
        assert torch.equal(loaded.model(IDS).logits, tiny_model(0)(IDS).logits)


def test_a_revision_pins_the_model_and_a_new_commit_changes_the_fingerprint(
        hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first_files = model_files(tmp_path, seed=0)
    first = hub.add_commit("org/tiny", first_files, ref="v1")
    hub.add_commit("org/tiny", first_files, ref="main")  # main = v1's files (a new commit)
    cache = tmp_path / "cache"
    v1 = identify_model("org/tiny@v1", cache_dir=cache)
    assert Path(v1.resolved).name == first
    assert v1.fingerprint == expected_fingerprint(first_files, "org/tiny", first)
    second_files = model_files(tmp_path, seed=1)
    second = hub.add_commit("org/tiny", second_files)
    go_online(monkeypatch)  # a new process: main is resolved again
    latest = identify_model("org/tiny", cache_dir=cache)
    assert Path(latest.resolved).name == second
    assert latest.fingerprint == expected_fingerprint(second_files, "org/tiny", second) != v1.fingerprint
    assert identify_model(f"org/tiny@{first}", cache_dir=cache).fingerprint == v1.fingerprint
    loaded = load_model("org/tiny@v1", device=CPU, dtype=torch.float32, cache_dir=cache)
    with torch.no_grad():
        assert torch.equal(loaded.model(IDS).logits, tiny_model(0)(IDS).logits)


def test_a_local_folder_of_the_same_name_wins(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "org" / "tiny"
    tiny_model(3).save_pretrained(local)
    monkeypatch.chdir(tmp_path)
    identity = identify_model("org/tiny", cache_dir=tmp_path / "cache")
    assert Path(identity.resolved) == local.resolve() and not hub.requests


def test_a_gated_repo_needs_a_token(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_commit("org/gated", model_files(tmp_path, seed=0), is_gated=True)
    with pytest.raises(UserError, match=r"^Hub model org/gated is gated: .*HF_TOKEN"):
        identify_model("org/gated", cache_dir=tmp_path / "cache")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    go_online(monkeypatch)
    assert identify_model("org/gated", cache_dir=tmp_path / "cache").kind == "pretrained"
    written = [p for p in tmp_path.rglob("*") if p.is_file() and b"hf_test_token" in p.read_bytes()]
    assert written == []  # the token is sent, never stored


@pytest.mark.parametrize(("model", "message"), [
    ("org/missing", r"^Hub model org/missing not found .*HF_TOKEN"),
    ("org/tiny@nope", r"^Hub model org/tiny has no revision 'nope'"),
])
def test_unknown_repos_and_revisions_are_one_line_errors(hub: FakeHub, tmp_path: Path, model: str, message: str) -> None:
    hub.add_commit("org/tiny", model_files(tmp_path, seed=0))
    with pytest.raises(UserError, match=message) as raised:
        identify_model(model, cache_dir=tmp_path / "cache")
    assert "\n" not in str(raised.value)


def test_offline_with_nothing_cached_is_one_line(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    go_offline(monkeypatch)
    with pytest.raises(UserError, match=r"^Hub model org/tiny is not in the local cache .*HF_HUB_OFFLINE=1"):
        identify_model("org/tiny", cache_dir=tmp_path / "cache")


def test_the_cli_exits_2_with_one_line_before_loading(hub: FakeHub, tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "w1", "chosen": "w2", "rejected": "w3"}\n')
    env = {**os.environ, "HF_HUB_OFFLINE": "0"}
    result = subprocess.run([sys.executable, "-m", "dpo_eval.cli", "score", "--policy", "org/missing", "--ref", "none",
                             "--data", str(data), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Hub model org/missing not found" in lines[0]


def test_a_hub_adapter_on_a_hub_base_pinned_by_its_revision(hub: FakeHub, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    base_v1 = hub.add_commit("org/base", model_files(tmp_path, seed=0), ref="v1")
    hub.add_commit("org/base", model_files(tmp_path, seed=1))  # main moves on: the adapter must not follow
    files = adapter_files(tmp_path, "org/base", base_seed=0)
    config = json.loads(files["adapter_config.json"])
    files["adapter_config.json"] = json.dumps({**config, "revision": "v1"}).encode()
    hub.add_commit("org/lora", files)
    identity = identify_model("org/lora", cache_dir=tmp_path / "cache")
    assert identity.kind == "peft"
    base = identify_model(f"org/base@{base_v1}", cache_dir=tmp_path / "cache")
    from dpo_eval.models.identify import _adapter_settings_digest
    from dpo_eval.models.locate import locate

    adapter = locate("org/lora", tmp_path / "cache")
    weights = hashlib.blake2b(digest_size=16)
    weights.update(f"adapter_model.safetensors\0sha256:{hashlib.sha256(files['adapter_model.safetensors']).hexdigest()}\n"
                   .encode())
    assert adapter.base is not None and adapter.base.hub is not None and adapter.base.hub.commit == base_v1
    assert identity.fingerprint == combine_fingerprints(
        adapter=weights.hexdigest(), adapter_settings=_adapter_settings_digest(adapter.resolved),
        base=base.fingerprint, hub=f"org/lora@{adapter.hub.commit}")
    loaded = load_model("org/lora", device=CPU, dtype=torch.float32, cache_dir=tmp_path / "cache")
    from peft import PeftModel

    expected = PeftModel.from_pretrained(tiny_model(0), str(Path(identity.resolved))).merge_and_unload()
    with torch.no_grad():
        assert torch.allclose(loaded.model(IDS).logits, expected(IDS).logits, atol=1e-6)
        assert not torch.allclose(loaded.model(IDS).logits, tiny_model(0)(IDS).logits, atol=1e-4)
