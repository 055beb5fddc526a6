"""Which trainer wrote a run and what it recorded (name, version, loss, beta, each with its source), from
hand-built run dirs; the real trainers' runs are in tests/report/test_trainer_fixtures.py."""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from test_discover import fake_adapter, fake_model, write_state

from dpo_eval.evaluation.discover import discover_run
from dpo_eval.evaluation.trainers import identify_trainer, pickled_fields


@dataclass
class FakeDPOConfig:
    """Pickled like TRL's DPOConfig: a dataclass whose state dict holds beta and loss_type."""

    output_dir: str = "out"
    beta: float = 0.25
    loss_type: list = field(default_factory=lambda: ["sigmoid", "sft"])
    learning_rate: float = 1e-3


class Exploding:
    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled!')",))


def torch_save_like(path: Path, obj) -> Path:
    """A zip with archive/data.pkl, the layout torch.save writes."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
    return path


def test_pickled_fields_reads_values_without_running_the_pickle(tmp_path):
    path = torch_save_like(tmp_path / "training_args.bin", {"config": FakeDPOConfig(), "trap": Exploding()})
    assert pickled_fields(path) == {"beta": 0.25, "loss_type": ["sigmoid", "sft"]}
    one = torch_save_like(tmp_path / "one.bin", FakeDPOConfig(beta=3, loss_type=["ipo"]))
    assert pickled_fields(one) == {"beta": 3, "loss_type": ["ipo"]}
    (tmp_path / "junk.bin").write_bytes(b"not a zip")
    assert pickled_fields(tmp_path / "junk.bin") == {}


def test_a_trl_run_is_named_from_its_model_card_with_beta_from_training_args(tmp_path):
    fake_model(tmp_path / "checkpoint-2")
    write_state(tmp_path / "checkpoint-2", 2)
    (tmp_path / "README.md").write_text("---\nlibrary_name: transformers\ntags:\n- generated_from_trainer\n- trl\n"
                                        "- dpo\n---\n\n### Framework versions\n\n- TRL: 1.16.0\n- Transformers: 5.0\n")
    torch_save_like(tmp_path / "checkpoint-2" / "training_args.bin", FakeDPOConfig())
    info = identify_trainer(discover_run(tmp_path)).to_dict()
    assert info == {"name": "TRL", "source": "README.md (tag trl)",
                    "version": {"value": "1.16.0", "source": "README.md"},
                    "loss": {"value": "sigmoid,sft", "source": "checkpoint-2/training_args.bin (pickle opcodes, not loaded)"},
                    "beta": {"value": 0.25, "source": "checkpoint-2/training_args.bin (pickle opcodes, not loaded)"}}


def test_llama_factory_is_named_from_its_own_files_not_trainer_state(tmp_path):
    fake_model(tmp_path / "checkpoint-2")
    write_state(tmp_path, 2)
    (tmp_path / "trainer_log.jsonl").write_text('{"current_steps": 1, "loss": 0.69}\n')
    info = identify_trainer(discover_run(tmp_path))
    assert (info.name, info.name_source, info.beta, info.loss) == ("LLaMA-Factory", "trainer_log.jsonl", None, None)
    (tmp_path / "other.yaml").write_text("stage: dpo\npref_beta: 0.5\noutput_dir: elsewhere\n")  # another run's
    (tmp_path.parent / "dpo.yaml").write_text(f"stage: dpo\npref_beta: 0.2\noutput_dir: {tmp_path.name}\n")
    info = identify_trainer(discover_run(tmp_path)).to_dict()
    assert info["source"] == "trainer_log.jsonl"
    assert info["beta"] == {"value": 0.2, "source": "../dpo.yaml"}
    assert info["loss"] == {"value": "sigmoid", "source": "../dpo.yaml (LLaMA-Factory's default)"}


def test_torchtune_openrlhf_plain_trainer_and_unknown(tmp_path):
    tune = tmp_path / "tune"
    fake_adapter(tune / "epoch_0")
    (tune / "torchtune_config.yaml").write_text("loss:\n  _component_: torchtune.rlhf.loss.DPOLoss\n  beta: 0.1\n")
    info = identify_trainer(discover_run(tune))
    assert (info.name, info.loss.value, info.beta.value, info.beta.source) == (
        "torchtune", "torchtune.rlhf.loss.DPOLoss", 0.1, "torchtune_config.yaml")
    fake_model(tmp_path / "orl" / "global_step2_hf")
    assert identify_trainer(discover_run(tmp_path / "orl")).name == "OpenRLHF"
    plain = fake_model(tmp_path / "hf" / "checkpoint-2")
    (plain / "config.json").write_text(json.dumps({"transformers_version": "4.57.1"}))
    write_state(plain, 2)
    info = identify_trainer(discover_run(tmp_path / "hf")).to_dict()
    assert info["name"] == "transformers Trainer" and info["source"] == "checkpoint-2/trainer_state.json"
    assert info["version"] == {"value": "4.57.1", "source": "checkpoint-2/config.json (transformers_version)"}
    assert identify_trainer(discover_run(fake_model(tmp_path / "bare"))).name == "unknown"


def test_pickled_fields_follow_memo_references_to_repeated_strings(tmp_path):
    config = FakeDPOConfig(output_dir="sigmoid", loss_type=["sigmoid"])  # "sigmoid" pickled once, then fetched
    assert pickled_fields(torch_save_like(tmp_path / "a.bin", config))["loss_type"] == ["sigmoid"]


def test_the_run_header_line_names_each_value_with_its_source():
    from dpo_eval.reports.view import trained_with

    run = {"name": "lf", "trainer": "LLaMA-Factory", "beta": 0.3,
           "trained_with": {"name": "LLaMA-Factory", "source": "trainer_log.jsonl", "version": None,
                            "loss": {"value": "sigmoid", "source": "../dpo.yaml"},
                            "beta": {"value": 0.2, "source": "../dpo.yaml"}},
           "reference": {"path": "/m", "source": "--ref"}}
    assert trained_with(run) == ("lf: trainer LLaMA-Factory (trainer_log.jsonl) · version: not recorded · loss sigmoid "
                                 "(../dpo.yaml) · β 0.2 (../dpo.yaml) · report used β 0.3 · reference /m (--ref)")
    assert trained_with({"name": "x"}) == "x: trainer unknown · version: not recorded · loss: not recorded · β: not recorded"


def test_the_report_beta_is_the_one_the_trainer_recorded_unless_beta_is_given(tmp_path):
    from dpo_eval.evaluation.config import DEFAULT_BETA, ReportConfig
    from dpo_eval.evaluation.plan import _beta

    fake_model(tmp_path / "run" / "checkpoint-2")
    (tmp_path / "run" / "trainer_log.jsonl").write_text('{"current_steps": 1}\n')
    run = discover_run(tmp_path / "run")
    assert _beta(ReportConfig(run_dirs=("x",)), run) == DEFAULT_BETA  # nothing recorded
    (tmp_path / "dpo.yaml").write_text("stage: dpo\npref_beta: 0.4\noutput_dir: run\n")
    assert _beta(ReportConfig(run_dirs=("x",)), run) == 0.4
    assert _beta(ReportConfig(run_dirs=("x",), beta=0.05), run) == 0.05


def test_an_axolotl_run_is_named_from_its_model_card_before_trl(tmp_path):
    # Axolotl's card (hand-built from its documented form, no fixture): tags axolotl (and trl for its DPO),
    # the training config embedded with its version
    fake_model(tmp_path / "checkpoint-2")
    write_state(tmp_path / "checkpoint-2", 2)
    (tmp_path / "README.md").write_text("---\ntags:\n- axolotl\n- generated_from_trainer\n- trl\n- dpo\n---\n"
                                        "<details><summary>See axolotl config</summary>\n\naxolotl version: `0.9.2`\n"
                                        "```yaml\nrl: dpo\n```\n</details>\n")
    info = identify_trainer(discover_run(tmp_path)).to_dict()
    assert info == {"name": "Axolotl", "source": "README.md (tag axolotl)",
                    "version": {"value": "0.9.2", "source": "README.md"}, "loss": None, "beta": None}
