"""Inputs of `dpo-eval report`: reference (flag > manifest > adapter base), held-out pairs, prompts."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import save_tiny_model, write_text_pairs
from test_discover import fake_adapter, fake_model

from dpo_eval.errors import UserError
from dpo_eval.evaluation.discover import discover_run
from dpo_eval.evaluation.inputs import (
    DataSource,
    Reference,
    check_reference_identity,
    prompts_from_pairs,
    resolve_inputs,
    resolve_pairs,
    resolve_prompts,
    resolve_reference,
)


def write_manifest(run_dir: Path, *, reference: dict | None, eval_path: str | None = None,
                   output_dir: str | None = None, policy_init: str = "init") -> None:
    """The fields dpo-eval train's _write_manifest writes that the report reads."""
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"schema_version": 1, "kind": "dpo_eval.train", "policy_init": policy_init,
                "config": {"output_dir": output_dir or str(run_dir)}, "reference": reference,
                "data": {"path": "train.jsonl", "eval_path": eval_path}}
    (run_dir / "dpo_eval.json").write_text(json.dumps(manifest))


def ref_record(path: str, resolved: str, kind: str = "pretrained") -> dict:
    return {"path": path, "resolved": resolved, "kind": kind, "fingerprint": "f" * 64}


# ---------------------------------------------------------------------------------------------- reference


def test_reference_from_the_manifest_resolved_path(tmp_path):
    sft = fake_model(tmp_path / "sft")
    write_manifest(tmp_path / "run", reference=ref_record("somewhere/else", str(sft)))
    fake_model(tmp_path / "run" / "checkpoint-1")
    assert resolve_reference(discover_run(tmp_path / "run"), None) == (Reference(str(sft), "manifest", "f" * 64), [])


def test_moved_project_reference_found_from_the_training_working_dir(tmp_path, monkeypatch):
    """Trained in /old/project with output_dir runs/a and ref models/sft; now in tmp/project, cwd elsewhere."""
    project = tmp_path / "project"
    sft = fake_model(project / "models" / "sft")
    fake_model(project / "runs" / "a" / "checkpoint-1")
    write_manifest(project / "runs" / "a", reference=ref_record("models/sft", "/old/project/models/sft"),
                   eval_path="data/eval.jsonl", output_dir="runs/a")
    (project / "data").mkdir()
    (project / "data" / "eval.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    run = discover_run(project / "runs" / "a")
    reference, warnings = resolve_reference(run, None)
    assert (Path(reference.path).resolve(), reference.source, warnings) == (sft.resolve(), "manifest", [])
    source, warnings = resolve_pairs([run], None)
    assert (Path(source.path), source.source, warnings) == ((project / "data" / "eval.jsonl").resolve(), "manifest", [])


def test_reference_free_run_is_compared_with_its_initial_policy(tmp_path):
    init = fake_model(tmp_path / "init")
    write_manifest(tmp_path / "run", reference=None, policy_init=str(init))
    fake_model(tmp_path / "run" / "checkpoint-1")
    assert resolve_reference(discover_run(tmp_path / "run"), None) == (
        Reference(str(init), "manifest policy_init"), [])


def test_gguf_alias_reference_is_passed_on_as_the_alias(tmp_path):
    write_manifest(tmp_path / "run", reference=ref_record("smollm2", str(tmp_path / "gone"), kind="gguf"))
    fake_model(tmp_path / "run" / "checkpoint-1")
    assert resolve_reference(discover_run(tmp_path / "run"), None)[0] == Reference("smollm2", "manifest", "f" * 64)


def test_adapter_base_is_the_reference_without_a_manifest(tmp_path):
    base = fake_model(tmp_path / "run" / "base")  # relative to the adapter folder: ../base
    fake_adapter(tmp_path / "run" / "checkpoint-3", base="../base")
    reference, warnings = resolve_reference(discover_run(tmp_path / "run"), None)
    assert (Path(reference.path).resolve(), reference.source, warnings) == (base.resolve(), "adapter_config", [])
    fake_adapter(tmp_path / "run2" / "checkpoint-3", base=str(base))
    assert resolve_reference(discover_run(tmp_path / "run2"), None)[0] == Reference(str(base), "adapter_config")


def test_manifest_reference_wins_over_the_adapter_base(tmp_path):
    sft, base = fake_model(tmp_path / "sft"), fake_model(tmp_path / "base")
    fake_adapter(tmp_path / "run" / "checkpoint-3", base=str(base))
    write_manifest(tmp_path / "run", reference=ref_record(str(sft), str(sft)))
    assert resolve_reference(discover_run(tmp_path / "run"), None)[0].path == str(sft)


def test_explicit_ref_wins_with_a_warning_when_it_differs(tmp_path):
    sft, other = fake_model(tmp_path / "sft"), fake_model(tmp_path / "other")
    write_manifest(tmp_path / "run", reference=ref_record(str(sft), str(sft)))
    fake_model(tmp_path / "run" / "checkpoint-1")
    run = discover_run(tmp_path / "run")
    reference, warnings = resolve_reference(run, str(other))
    assert reference == Reference(str(other), "--ref")
    assert warnings == [f"run run: --ref {other} overrides the reference it was trained against ({sft}, "
                        "from dpo_eval.json)"]
    assert resolve_reference(run, str(tmp_path / "run" / ".." / "sft")) == (
        Reference(str(tmp_path / "run" / ".." / "sft"), "--ref"), [])


def test_no_reference_is_one_line_naming_the_three_ways(tmp_path):
    fake_model(tmp_path / "plain" / "checkpoint-1")
    with pytest.raises(UserError) as error:
        resolve_reference(discover_run(tmp_path / "plain"), None)
    message = str(error.value)
    assert "\n" not in message and message.startswith("run plain: no reference model found (no dpo_eval.json; "
                                                      "no PEFT checkpoint; no trainer config naming a local model; "
                                                      "no --ref)")
    for way in ("--ref PATH", "dpo_eval.json", "adapter_config.json"):
        assert way in message
    write_manifest(tmp_path / "gone", reference=ref_record("gone/sft", "/gone/sft"))
    fake_adapter(tmp_path / "gone" / "checkpoint-1", base="/gone/base")
    with pytest.raises(UserError, match=r"names reference 'gone/sft', which does not exist here; .*names base model "
                                        r"'/gone/base', which is neither a local path nor a Hub id; no trainer config "
                                        r"naming a local model; no --ref\)"):
        resolve_reference(discover_run(tmp_path / "gone"), None)


def test_hub_ids_are_references(tmp_path):
    """An adapter base, --ref, or a manifest reference training took from the Hub, named by Hub id (the
    Hub is only reached when the model is identified, tests/hub/)."""
    fake_adapter(tmp_path / "lora" / "checkpoint-1", base="org/hub-model")
    assert resolve_reference(discover_run(tmp_path / "lora"), None) == (
        Reference("org/hub-model", "adapter_config"), [])
    config = tmp_path / "pinned" / "checkpoint-1" / "adapter_config.json"
    fake_adapter(config.parent, base="org/hub-model")
    config.write_text(json.dumps({"base_model_name_or_path": "org/hub-model", "revision": "v2", "r": 8}))
    assert resolve_reference(discover_run(tmp_path / "pinned"), None)[0].path == "org/hub-model@v2"
    assert resolve_reference(discover_run(tmp_path / "lora"), "org/sft@main")[0] == Reference("org/sft@main", "--ref")
    snapshot = f"/hf/hub/models--org--sft/snapshots/{'c' * 40}"
    write_manifest(tmp_path / "trained", reference=ref_record("org/sft", snapshot))
    fake_model(tmp_path / "trained" / "checkpoint-1")
    assert resolve_reference(discover_run(tmp_path / "trained"), None)[0] == Reference(
        f"org/sft@{'c' * 40}", "manifest", "f" * 64)


def test_explicit_ref_that_does_not_exist_is_refused(tmp_path):
    fake_model(tmp_path / "run" / "checkpoint-1")
    run = discover_run(tmp_path / "run")
    with pytest.raises(UserError, match=r"--ref .*missing/sft does not exist"):
        resolve_reference(run, str(tmp_path / "missing" / "sft"))
    assert resolve_reference(run, "smollm2") == (Reference("smollm2", "--ref"), [])


def test_check_reference_identity(tmp_path):
    identity = SimpleNamespace(fingerprint="a" * 64)  # only the fingerprint is read; the real one is tested below
    assert check_reference_identity(Reference("sft", "manifest", "a" * 64), identity) is None
    assert check_reference_identity(Reference("sft", "adapter_config"), identity) is None
    with pytest.raises(UserError, match=r"fingerprint aaaaaaaaaaaa, but training recorded bbbbbbbbbbbb: its weights "
                                        r"changed since training"):
        check_reference_identity(Reference("sft", "manifest", "b" * 64), identity)
    assert "training recorded bbbbbbbbbbbb" in check_reference_identity(Reference("sft", "--ref", "b" * 64), identity)


# ---------------------------------------------------------------------------------------------- pairs, prompts


def run_with_eval(tmp_path, name: str, eval_path: str | None):
    fake_model(tmp_path / name / "checkpoint-1")
    write_manifest(tmp_path / name, reference=None, eval_path=eval_path)
    return discover_run(tmp_path / name)


def test_pairs_from_the_flag_or_the_manifests(tmp_path):
    eval_a, eval_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    eval_a.write_text("{}\n")
    eval_b.write_text("{}\n")
    a, a2 = run_with_eval(tmp_path, "a", str(eval_a)), run_with_eval(tmp_path, "a2", str(eval_a))
    b, none = run_with_eval(tmp_path, "b", str(eval_b)), run_with_eval(tmp_path, "none", None)
    assert resolve_pairs([a, b], str(eval_b)) == (DataSource(str(eval_b), "--data"), [])
    assert resolve_pairs([a, a2], None) == (DataSource(str(eval_a.resolve()), "manifest"), [])
    source, warnings = resolve_pairs([a, none], None)
    assert source == DataSource(str(eval_a.resolve()), "manifest")
    assert warnings == [f"held-out pairs {eval_a.resolve()} (from a's dpo_eval.json) are used for run(s) none too"]
    with pytest.raises(UserError, match=r"evaluated on different held-out pairs .*: pass --data to choose one"):
        resolve_pairs([a, b], None)
    hub = run_with_eval(tmp_path, "hub", "org/prefs@v1")  # trained with a Hub dataset as eval_data
    assert resolve_pairs([hub], None) == (DataSource("org/prefs@v1", "manifest"), [])
    assert resolve_pairs([a], "org/prefs") == (DataSource("org/prefs", "--data"), [])


def test_missing_pairs_are_one_line_errors(tmp_path):
    none = run_with_eval(tmp_path, "none", None)
    with pytest.raises(UserError, match=r"no held-out pairs \(no run's dpo_eval.json names eval data\): pass --data"):
        resolve_pairs([none], None)
    gone = run_with_eval(tmp_path, "gone", "data/gone.jsonl")
    with pytest.raises(UserError, match=r"names eval data 'data/gone.jsonl', which does not exist here\): pass --data"):
        resolve_pairs([gone], None)
    with pytest.raises(UserError, match=r"--data .*nope.jsonl does not exist"):
        resolve_pairs([gone], str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match=r"--prompts .*nope.jsonl does not exist"):
        resolve_prompts(DataSource("pairs.jsonl", "--data"), str(tmp_path / "nope.jsonl"))


def test_prompts_from_the_flag_or_derived_from_the_pairs(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    pairs = DataSource("eval.jsonl", "manifest")
    assert resolve_prompts(pairs, str(prompts)) == DataSource(str(prompts), "--prompts")
    assert resolve_prompts(pairs, None) == DataSource("eval.jsonl", "pairs")


def test_prompts_from_pairs_once_per_distinct_prompt(tmp_path):
    from dpo_eval.data.pairs import PreferencePair
    from dpo_eval.generate import Prompt

    chat = [{"role": "user", "content": "hi"}]
    pairs = [PreferencePair("p0", "s", "tell me", "a", "b"), PreferencePair("p1", "s", "why", "a", "b"),
             PreferencePair("p2", "s", "tell me", "c", "d"), PreferencePair("p3", "s", chat, [], []),
             PreferencePair("p4", "s", [dict(chat[0])], [], []), PreferencePair("p5", "s", [], [], []),
             PreferencePair("p6", "s", "  ", "a", "b")]
    assert prompts_from_pairs(pairs) == [Prompt("p0", "tell me"), Prompt("p1", "why"), Prompt("p3", chat)]


# ---------------------------------------------------------------------------------------------- a real dpo-eval run


def test_resolve_inputs_on_a_run_written_by_dpo_eval_train(tmp_path):
    """Two steps of our trainer, saving each step: the report reads what the trainer really writes."""
    from conftest import write_synthetic_preferences

    from dpo_eval.models import identify_model
    from dpo_eval.train.config import load_config
    from dpo_eval.train.recipe import train

    model = save_tiny_model(tmp_path / "init", seed=7)
    data = write_synthetic_preferences(tmp_path / "train.jsonl", n=8, seed=1)
    eval_data = write_synthetic_preferences(tmp_path / "eval.jsonl", n=4, seed=2)
    config = load_config(None, (), policy=model, data=data, eval_data=eval_data, output_dir=str(tmp_path / "run"),
                         batch_size=4, max_steps=2, save_every=1, show_progress=False, max_length=None,
                         cache_dir=str(tmp_path / "cache"))
    train(config)
    inputs = resolve_inputs([tmp_path / "run"], steps="1,final")
    (run,) = inputs.runs
    assert [(c.step, c.label, c.kind) for c in run.checkpoints] == [(1, "1", "full"), (2, "2", "full")]
    reference = inputs.references["run"]
    assert (Path(reference.path), reference.source) == (Path(model).resolve(), "manifest")
    identity = identify_model(reference.path, cache_dir=tmp_path / "cache")
    assert reference.fingerprint == identity.fingerprint
    assert check_reference_identity(reference, identity) is None
    assert inputs.pairs == DataSource(str(Path(eval_data).resolve()), "manifest")
    assert inputs.prompts == DataSource(inputs.pairs.path, "pairs")
    assert inputs.warnings == ()
    assert run.trainer_state_path == (tmp_path / "run" / "checkpoint-2" / "trainer_state.json").resolve()


def test_resolve_inputs_checks_steps_syntax_first(tmp_path):
    with pytest.raises(UserError, match="is not a step"):
        resolve_inputs([tmp_path / "missing"], steps="1,,2")
    with pytest.raises(UserError, match="does not exist"):
        resolve_inputs([tmp_path / "missing"])


def test_resolve_inputs_with_flags_on_plain_model_dirs(tmp_path):
    folder = Path(save_tiny_model(tmp_path / "dpo"))
    ref = fake_model(tmp_path / "sft")
    pairs = write_text_pairs(tmp_path / "pairs.jsonl", n=3)
    inputs = resolve_inputs([folder], ref=str(ref), data=str(pairs))
    assert inputs.references == {"dpo": Reference(str(ref), "--ref")}
    assert inputs.pairs == DataSource(str(pairs), "--data")
    assert inputs.prompts == DataSource(str(pairs), "pairs")
