"""One step of our DPO loss gives TRL 1.16 DPOTrainer's loss and gradients on the same batch.

TRL side: a real `trl.DPOTrainer` (sigmoid loss, separate reference model, fp32, no truncation)
on a tiny Llama; one batch from its own train dataloader goes through `trainer.compute_loss` and
`accelerator.backward`, exactly what `Trainer.training_step` does with one accumulation step.

Our side: the same policy weights, the token ids read back from TRL's collated batch (so
tokenization cannot matter), pairs packed several to a row by `pack_rows`, `packed_logps`,
reference log-probs from a plain per-sequence forward of the reference model, and
`compute_loss("dpo", ...).losses.mean()` (TRL also averages its per-pair losses over the batch).

TRL's public API does the work (DPOTrainer, get_train_dataloader, compute_loss,
accelerator.backward); two private members are read: `_prepare_inputs` (what training_step calls
first) and `_metrics` (the batch means TRL logs). This is the only end-to-end comparison with a TRL
trainer; the other losses are compared with TRL's loss methods on a stub (test_losses.py).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import save_tiny_model, write_text_pairs

from dpo_eval.engine.logprobs import packed_logps
from dpo_eval.engine.packing import pack_rows
from dpo_eval.tokenization import TokenizedPair, TokenizerSettings, tokenize_pair
from dpo_eval.train.losses import PairLogps, compute_loss

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

BATCH = 4
BETA = 0.1
N_PAIRS = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A DPOTrainer on a tiny Llama (policy seed 0, reference seed 1) and a few plain-text pairs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    root = tmp_path_factory.mktemp("trl_parity")
    policy_dir = save_tiny_model(root / "policy", seed=0)
    ref_dir = save_tiny_model(root / "ref", seed=1)
    rows = [json.loads(line) for line in open(write_text_pairs(root / "pairs.jsonl", n=N_PAIRS, seed=3))]
    dataset = datasets.Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    args = DPOConfig(output_dir=str(root / "out"), per_device_train_batch_size=BATCH, beta=BETA,
                     loss_type="sigmoid", max_length=None, bf16=False, gradient_checkpointing=False,
                     report_to=[], use_cpu=True, seed=0)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy_dir),
                         ref_model=AutoModelForCausalLM.from_pretrained(ref_dir), args=args,
                         train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(policy_dir))
    return {"trainer": trainer, "policy_dir": policy_dir, "ref_dir": ref_dir, "rows": rows}


def pairs_from_trl_batch(batch: dict[str, torch.Tensor]) -> list[TokenizedPair]:
    """Read the pairs back from DPODataCollator's layout: rows [chosen_0..chosen_B-1, rejected_0..]."""
    n = batch["input_ids"].shape[0] // 2
    pairs = []
    for i in range(n):
        parts = {}
        for name, row in (("chosen", i), ("rejected", n + i)):
            ids, real, completion = (batch[k][row] for k in ("input_ids", "attention_mask", "completion_mask"))
            parts[name + "_prompt"] = tuple(ids[(real == 1) & (completion == 0)].tolist())
            parts[name] = tuple(ids[completion == 1].tolist())
            # the completion follows the prompt contiguously, then right padding
            assert completion[: len(parts[name + "_prompt"])].sum() == 0
        assert parts["chosen_prompt"] == parts["rejected_prompt"]
        pairs.append(TokenizedPair(str(i), "trl", parts["chosen_prompt"], parts["chosen"], parts["rejected"]))
    return pairs


def sequence_logp(model: torch.nn.Module, prompt: tuple, response: tuple) -> float:
    """log p(response | prompt) summed over tokens, one unpadded sequence, plain forward."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1: -1].float()
    return float(torch.log_softmax(logits, -1).gather(1, ids[0, len(prompt):, None]).sum())


def trl_step(trainer, batch) -> tuple[float, dict[str, torch.Tensor], dict[str, float]]:
    """TRL's loss and gradients on `batch` (Trainer.training_step with one accumulation step)."""
    model = trainer.model
    model.train()
    model.zero_grad(set_to_none=True)
    inputs = trainer._prepare_inputs(batch)
    loss = trainer.compute_loss(model, inputs)
    trainer.accelerator.backward(loss)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if isinstance(v, list) and v}
    return float(loss.detach()), {n: p.grad.detach().clone() for n, p in model.named_parameters()}, metrics


def our_step(policy, ref, pairs: list[TokenizedPair], pad_id: int):
    """Our loss and gradients: pairs packed two to a row, reference from per-sequence forwards."""
    policy.train()
    policy.zero_grad(set_to_none=True)
    packed = pack_rows([pairs[i: i + 2] for i in range(0, len(pairs), 2)], pad_id)
    sums, counts = packed_logps(policy, packed)
    ref_c = torch.tensor([sequence_logp(ref, p.prompt_ids, p.chosen_ids) for p in pairs])
    ref_r = torch.tensor([sequence_logp(ref, p.prompt_ids, p.rejected_ids) for p in pairs])
    logps = PairLogps(sums[:, 0], sums[:, 1], ref_c, ref_r, counts[:, 0].float(), counts[:, 1].float())
    out = compute_loss("dpo", logps, {"beta": BETA})
    loss = out.losses.mean()
    loss.backward()
    return float(loss.detach()), {n: p.grad.detach().clone() for n, p in policy.named_parameters()}, out, logps


def test_dpo_step_matches_trl_dpo_trainer(setup):
    from transformers import AutoModelForCausalLM

    trainer = setup["trainer"]
    batch = next(iter(trainer.get_train_dataloader()))
    if "completion_mask" not in batch:
        pytest.skip("this TRL's DPO batch layout predates TRL 1.x (no completion_mask); the test reads 1.16's")
    assert batch["input_ids"].shape[0] == 2 * BATCH
    assert "ref_chosen_logps" not in batch  # TRL computes the reference inside compute_loss here
    pairs = pairs_from_trl_batch(batch)
    assert len({len(p.prompt_ids) + len(p.chosen_ids) for p in pairs}) > 1, "want padding in TRL's batch"

    policy = AutoModelForCausalLM.from_pretrained(setup["policy_dir"])
    ref = AutoModelForCausalLM.from_pretrained(setup["ref_dir"]).eval()
    theirs_state = trainer.model.state_dict()
    for name, value in policy.state_dict().items():
        assert torch.equal(value, theirs_state[name]), f"policy weights differ at {name}"

    trl_loss, trl_grads, trl_metrics = trl_step(trainer, batch)
    our_loss, our_grads, out, logps = our_step(policy, ref, pairs, trainer.processing_class.pad_token_id)

    # Log-probs and rewards (TRL logs batch means)
    assert abs(float(logps.policy_chosen.mean()) - trl_metrics["logps/chosen"]) <= 1e-4
    assert abs(float(logps.policy_rejected.mean()) - trl_metrics["logps/rejected"]) <= 1e-4
    assert abs(float(out.chosen_rewards.mean()) - trl_metrics["rewards/chosen"]) <= 1e-5
    assert abs(float(out.rejected_rewards.mean()) - trl_metrics["rewards/rejected"]) <= 1e-5
    assert abs(float(out.chosen_rewards.mean())) > 1e-3, "reference equals policy: rewards would be trivial"

    assert our_loss == pytest.approx(trl_loss, rel=1e-6, abs=1e-7)
    assert our_grads.keys() == trl_grads.keys()
    scale = max(float(g.abs().max()) for g in trl_grads.values())
    assert scale > 1e-4, "gradients are too small to compare meaningfully"
    for name, ours in our_grads.items():
        torch.testing.assert_close(ours, trl_grads[name], rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    worst = max(float((our_grads[n] - trl_grads[n]).abs().max()) for n in our_grads)
    assert worst <= 1e-5 * scale


def test_plain_text_tokenization_matches_trl(setup):
    # Not needed by the gradient test (it reads TRL's ids), but our plain-text rule claims TRL's
    # convention: tok(prompt + response) past len(tok(prompt)), EOS appended.
    from dpo_eval.data.pairs import PreferencePair

    trainer = setup["trainer"]
    settings = TokenizerSettings(template="plain", max_length=None)
    for row, processed in zip(setup["rows"], trainer.train_dataset, strict=True):
        pair = PreferencePair(row["id"], row["subset"], row["prompt"], row["chosen"], row["rejected"])
        ours = tokenize_pair(pair, trainer.processing_class, "plain", settings)
        assert ours.prompt_ids == tuple(processed["prompt_ids"])
        assert ours.chosen_ids == tuple(processed["chosen_ids"])
        assert ours.rejected_ids == tuple(processed["rejected_ids"])
