"""Labellers of the loop against hand values or a straightforward independent computation."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import save_tiny_model, tiny_llama, word_tokenizer
from loop_setup import LOOP_DIR

from dpo_eval.errors import UserError
from dpo_eval.loop.labels import GoldLabeller, Label, RuleLabeller, make_labeller
from dpo_eval.loop.model_labels import ImplicitLabeller, LabelContext, RewardModelLabeller
from dpo_eval.rerank import Candidate, CandidateSet, tokenize_candidates


@pytest.fixture(autouse=True)
def rules_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(LOOP_DIR))


def samples_of(prompt, outputs, prompt_id="q0"):
    return [{"prompt_id": prompt_id, "sample_index": i, "prompt": prompt, "output": o} for i, o in enumerate(outputs)]


def test_gold_labeller_scores_one_for_the_answer_as_whole_tokens(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"prompt": "What is 2 + 2?", "answer": "4"}) + "\n")
    labeller = GoldLabeller(str(answers))
    labels = labeller.label_samples(samples_of("What is 2 + 2?", ["It is 4.", "14", "four"]))
    assert [label.score for label in labels] == [1.0, 0.0, 0.0]
    assert labels[0].source == f"gold:{answers}"
    assert labeller.label("What is 3 + 3?", "6") == Label(None, f"gold:{answers}", "no gold answer for this prompt")
    assert make_labeller(f"gold:{answers}").key == labeller.key


def test_rule_labeller_scores_and_unscored_reasons():
    labels = RuleLabeller("loop_rules:good_minus_bad").label_samples(samples_of("x", ["good yes bad", "no no", ""]))
    assert [label.score for label in labels] == [1.0, -2.0, 0.0]
    refused = RuleLabeller("loop_rules:refuses").label("x", "y")
    assert refused.score is None and "must return a finite number, got 'no idea'" in refused.reason
    with pytest.raises(UserError, match="cannot import 'loop_rules:missing'"):
        RuleLabeller("loop_rules:missing")


def test_unknown_labellers_are_user_errors():
    with pytest.raises(UserError, match="labeller 'judge:x' is unknown"):
        make_labeller("judge:x")


def test_pairwise_rule_labels_are_win_rates_over_both_orders(tmp_path):
    from dpo_eval.loop.pairwise_labels import PairwiseJudgeLabeller

    context = LabelContext(reference="-")
    labeller = make_labeller("rule:loop_rules:longer_wins", context)
    assert isinstance(labeller, PairwiseJudgeLabeller)
    samples = samples_of("x", ["aa", "a", "aaaa", "bb"]) + samples_of("y", ["z"], prompt_id="q1")
    labels = labeller.label_samples(samples, tmp_path)
    # q0: "aa" beats "a", loses to "aaaa", ties "bb" -> (1 + 0 + .5) / 3; "a" loses all; "aaaa" wins all
    assert [label.score for label in labels[:4]] == pytest.approx([0.5, 0.0, 1.0, 0.5])
    assert labels[0].extra == {"n_comparisons": 3, "n_unscored_comparisons": 0}
    # q1 has one sample: nothing to compare with
    assert labels[4].score is None and labels[4].extra["n_comparisons"] == 0
    # a position-biased judge: P(first) = .8 in both orders averages to a tie
    biased = make_labeller("rule:loop_rules:first_shown", context).label_samples(samples_of("x", ["a", "b", "c"]))
    assert [label.score for label in biased] == pytest.approx([0.5, 0.5, 0.5])
    broken = make_labeller("rule:loop_rules:pairwise_broken", context).label_samples(samples_of("x", ["a", "b"]))
    assert [(label.score, label.extra["n_unscored_comparisons"]) for label in broken] == [(None, 1), (None, 1)]
    assert (tmp_path / "judge_cache.sqlite").exists()


def test_pairwise_labeller_reuses_cached_verdicts(tmp_path, monkeypatch):
    labeller = make_labeller("rule:loop_rules:longer_wins", LabelContext(reference="-"))
    samples = samples_of("x", ["aa", "a", "aaa"])
    first = labeller.label_samples(samples, tmp_path)
    monkeypatch.setattr(labeller.backend, "judge", lambda *args: pytest.fail("asked the judge again"))
    assert labeller.label_samples(samples, tmp_path) == first


def test_openai_and_local_labellers_are_pairwise_judges(tmp_path):
    from dpo_eval.loop.config import JudgeSettings
    from dpo_eval.loop.pairwise_labels import PairwiseJudgeLabeller

    context = LabelContext(reference="-", cache_dir=str(tmp_path / "cache"))
    remote = make_labeller("openai:judge-model", context, judge=JudgeSettings(base_url="http://localhost:9/v1"))
    assert isinstance(remote, PairwiseJudgeLabeller)
    assert remote.key["judge"]["model"] == "judge-model" and remote.key["mode"] == "verdict"
    judge_model = save_tiny_model(tmp_path / "judge", seed=3)
    local = make_labeller(f"local:{judge_model}", context)
    assert local.key["judge"]["backend"] == "local" and local.key["judge"]["fingerprint"]
    # the tiny judge's vocabulary has no "A" / "B" label token: every comparison is unscored and counted
    labels = local.label_samples(samples_of("why ", ["good", "no", "the cat"]))
    assert [(label.score, label.extra["n_unscored_comparisons"]) for label in labels] == [(None, 2)] * 3
    assert labels[0].reason == "no comparison with another sample was scored by the judge"


def naive_logp(model, prompt_ids, response_ids) -> float:
    """Σ log p(response | prompt) by one full forward and log_softmax: the straightforward way."""
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    start = len(prompt_ids)
    return float(sum(logps[start + k - 1, t] for k, t in enumerate(response_ids)))


def test_implicit_labeller_is_beta_times_the_log_ratio(tmp_path):
    policy, ref = save_tiny_model(tmp_path / "policy", seed=1), save_tiny_model(tmp_path / "ref", seed=2)
    context = LabelContext(reference=ref, cache_dir=str(tmp_path / "cache"), device="cpu", dtype="float32")
    labeller = make_labeller(f"implicit:{policy}", context)
    assert isinstance(labeller, ImplicitLabeller) and labeller.ref == ref and labeller.beta == 0.1
    samples = samples_of("tell me about the cat ", ["good dog", "no", "the mat is bad"]) + \
        samples_of("why ", ["yes"], prompt_id="q1")
    labels = labeller.label_samples(samples)
    tokenizer = word_tokenizer()
    sets = [CandidateSet("q", s["prompt"], (Candidate(s["output"], 0),)) for s in samples]
    sequences = tokenize_candidates(sets, tokenizer)
    models = [tiny_llama(vocab_size=len(tokenizer), seed=seed).eval() for seed in (1, 2)]
    expected = [0.1 * (naive_logp(models[0], p, r) - naive_logp(models[1], p, r)) for p, r in sequences]
    assert [label.score for label in labels] == pytest.approx(expected, abs=1e-5)
    assert len(set(expected)) == len(expected)  # the test can tell samples apart
    explicit = make_labeller(f"implicit:{policy},{policy}", context)
    assert [label.score for label in explicit.label_samples(samples)] == pytest.approx([0.0] * 4, abs=1e-6)


def test_implicit_labeller_through_vllm_equals_the_engine_and_keys_its_labels(tmp_path, monkeypatch):
    """logprobs: {logprob_backend: vllm} against vLLM-shaped stand-ins (tests/engine/fake_vllm.py) serving the
    same tiny models: the labels are the engine labeller's; the backend and vLLM version are in the key."""
    import dataclasses
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    from dpo_eval.logprob_settings import LogprobSettings
    from dpo_eval.vllm_server import SERVERS

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "engine"))
    from fake_vllm import FakeVllm

    policy, ref = save_tiny_model(tmp_path / "policy", seed=1), save_tiny_model(tmp_path / "ref", seed=2)
    servers = [FakeVllm(AutoModelForCausalLM.from_pretrained(p).eval(), root=p) for p in (policy, ref)]
    closed = []
    monkeypatch.setattr(SERVERS, "close", lambda: closed.append(True))
    try:
        engine_context = LabelContext(reference=ref, cache_dir=str(tmp_path / "cache"), device="cpu", dtype="float32")
        context = dataclasses.replace(engine_context, logprobs=LogprobSettings(
            "vllm", vllm_url=servers[0].url, vllm_ref_url=servers[1].url))
        samples = samples_of("tell me about the cat ", ["good dog", "no", "the mat is bad"]) + \
            samples_of("why ", ["yes"], prompt_id="q1")
        engine, vllm = make_labeller(f"implicit:{policy}", engine_context), make_labeller(f"implicit:{policy}", context)
        expected = [label.score for label in engine.label_samples(samples)]
        labels = vllm.label_samples(samples)
        assert [label.score for label in labels] == pytest.approx(expected, abs=1e-5)
        assert len(set(expected)) == len(expected) and all(label.source == f"implicit:{policy},{ref}" for label in labels)
        assert servers[0].requests and servers[1].requests and closed  # asked vLLM; servers it started stopped
        assert "logprobs" not in engine.key and {k: v for k, v in vllm.key.items() if k != "logprobs"} == engine.key
        assert vllm.key["logprobs"]["policy"].startswith("vllm0.32.0-")
        assert vllm.key["logprobs"]["policy"] != vllm.key["logprobs"]["reference"]  # each server's URL in its tag
        servers[1].version = "0.33.0"
        assert make_labeller(f"implicit:{policy}", context).key["logprobs"]["reference"].startswith("vllm0.33.0-")
    finally:
        for server in servers:
            server.close()


def test_implicit_labeller_whose_vllm_cannot_start_is_one_line(tmp_path):
    from dpo_eval.logprob_settings import LogprobSettings

    policy = save_tiny_model(tmp_path / "policy", seed=1)
    context = lambda python: LabelContext(reference=policy, cache_dir=str(tmp_path / "cache"),  # noqa: E731
                                          logprobs=LogprobSettings("vllm", vllm_python=str(python)))
    with pytest.raises(UserError, match="no vLLM python at"):  # before any round: the key needs its version
        make_labeller(f"implicit:{policy}", context(tmp_path / "nowhere"))
    python = tmp_path / "python"  # reports a vLLM version, then exits at once when asked to serve
    python.write_text("#!/bin/sh\nif [ \"$1\" = -c ]; then echo 0.32.0; exit 0; fi\necho boom >&2; exit 3\n")
    python.chmod(0o755)
    labeller = make_labeller(f"implicit:{policy}", context(python))
    with pytest.raises(UserError, match="vLLM exited with code 3 before serving") as caught:
        labeller.label_samples(samples_of("why ", ["yes"]))
    assert "\n" not in str(caught.value)


def test_reward_model_labeller_batches_as_scoring_each_alone(tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = word_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    labeller = make_labeller(f"rm:{tmp_path / 'rm'}", LabelContext(reference="-", device="cpu", dtype="float32",
                                                                   batch_size=3))
    assert isinstance(labeller, RewardModelLabeller)
    outputs = ["good", "no no no bad sorry", "the cat sat on the mat", "yes", "why"]
    labels = labeller.label_samples(samples_of("tell me ", outputs))
    model = LlamaForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    expected = []
    for output in outputs:  # one at a time, no padding, the chat template written out by hand
        text = f"<|user|> tell me  <eos> <|assistant|> {output} <eos> "
        with torch.no_grad():
            expected.append(float(model(tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids)
                                  .logits[0, 0]))
    assert [label.score for label in labels] == pytest.approx(expected, abs=1e-5)
    assert labels[0].source == f"rm:{tmp_path / 'rm'}"


def test_parse_score_takes_the_last_score_in_range():
    from dpo_eval.loop.self_judge import parse_score

    assert parse_score("Relevant, complete.\nScore: 4") == 4.0
    assert parse_score("score:3 ... on reflection Score: **2**") == 2.0
    assert parse_score("Score: 4.5") == 4.5
    assert parse_score("Score: 7") is None and parse_score("Score: 10") is None
    assert parse_score("I give it four points") is None and parse_score("") is None


def test_self_label_averages_parseable_judgments_and_counts_the_rest():
    from dpo_eval.loop.self_judge import self_label

    label = self_label(["Score: 4", "no idea", "Score: 1"], "self")
    assert (label.score, label.extra["n_unparseable"], label.reason) == (2.5, 1, "")
    empty = self_label(["nothing", "still nothing"], "self")
    assert empty.score is None and empty.extra["n_unparseable"] == 2
    assert empty.reason == "unparseable: no 'Score: N' in any of 2 judgment(s)"


def test_self_labeller_judges_with_the_sampling_policy_seeded(tmp_path):
    from dpo_eval.loop.config import SamplingSettings
    from dpo_eval.loop.self_judge import RUBRIC_SHA256, SelfLabeller, judge_prompt

    policy = save_tiny_model(tmp_path / "policy", seed=1)
    context = LabelContext(reference=policy, cache_dir=str(tmp_path / "cache"), device="cpu", dtype="float32")
    labeller = make_labeller("self", context, judge_samples=2, sampling=SamplingSettings(max_new_tokens=5))
    assert isinstance(labeller, SelfLabeller) and labeller.key["rubric_sha256"] == RUBRIC_SHA256
    samples = [{**s, "model": policy, "seed": 11} for s in samples_of("why ", ["good dog", "no"])]
    labels = labeller.label_samples(samples)
    assert [len(label.extra["judgments"]) for label in labels] == [2, 2]
    # the tiny model's vocabulary has no "Score:", so every judgment is dropped and counted
    assert [(label.score, label.extra["n_unparseable"]) for label in labels] == [(None, 2), (None, 2)]
    assert labeller.label_samples(samples) == labels  # seeded: the same judgments again
    reseeded = labeller.label_samples([{**s, "seed": 12} for s in samples])
    assert [label.extra["judgments"] for label in reseeded] != [label.extra["judgments"] for label in labels]
    assert "Question: why \n\nResponse: good dog" in judge_prompt("why ", "good dog")
