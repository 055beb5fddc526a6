"""Listwise (Plackett-Luce) DPO: hand values for K = 3, K = 2 is DPO, padding, grad packing, data rows.

Hand data for K = 3 (beta = 0.5), responses best first:
    policy  [-4.0, -5.0, -6.0]   ref [-5.0, -5.0, -5.0]   -> r = beta * (policy - ref) = [0.5, 0.0, -0.5]
    full ranking (m = 2): [log(e^0.5 + e^0 + e^-0.5) - 0.5] + [log(e^0 + e^-0.5) - 0]
    chosen vs rest (m = 1): the first bracket only
TRL 1.16 has no listwise loss, so there is no TRL comparison.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_llama, word_tokenizer
from test_losses import hand_logps

from dpo_eval.engine.multi import pack_groups
from dpo_eval.errors import UserError
from dpo_eval.tokenization import TokenizerSettings
from dpo_eval.train.listwise import RankedLogps, group_logps, plackett_luce_loss
from dpo_eval.train.listwise_data import RankedGroup, load_ranked
from dpo_eval.train.losses import dpo_loss

F64 = torch.float64


def ranked(policy, ref, n_ranked, valid=None) -> RankedLogps:
    policy, ref = torch.tensor(policy, dtype=F64, requires_grad=True), torch.tensor(ref, dtype=F64)
    valid = torch.ones(policy.shape, dtype=torch.bool) if valid is None else torch.tensor(valid)
    return RankedLogps(policy, ref, valid, torch.tensor(n_ranked))


def test_k3_hand_values_full_ranking_and_top1():
    full = plackett_luce_loss(ranked([[-4.0, -5.0, -6.0]], [[-5.0, -5.0, -5.0]], [2]), beta=0.5)
    first = math.log(math.exp(0.5) + 1 + math.exp(-0.5)) - 0.5
    second = math.log(1 + math.exp(-0.5))
    assert float(full.losses[0].detach()) == pytest.approx(first + second, rel=1e-12)
    assert float(full.chosen_rewards[0]) == pytest.approx(0.5) and float(full.rejected_rewards[0]) == pytest.approx(-0.25)
    top1 = plackett_luce_loss(ranked([[-4.0, -5.0, -6.0]], [[-5.0, -5.0, -5.0]], [1]), beta=0.5)
    assert float(top1.losses[0].detach()) == pytest.approx(first, rel=1e-12)


def test_k3_gradient_hand_values():
    # d/dr_k of the full-ranking loss: softmax weights of each suffix minus the chosen indicator
    logps = ranked([[-4.0, -5.0, -6.0]], [[-5.0, -5.0, -5.0]], [2])
    plackett_luce_loss(logps, beta=0.5).losses.sum().backward()
    e = [math.exp(0.5), 1.0, math.exp(-0.5)]
    s1, s2 = sum(e), e[1] + e[2]
    expected = [e[0] / s1 - 1, e[1] / s1 + e[1] / s2 - 1, e[2] / s1 + e[2] / s2]
    torch.testing.assert_close(logps.policy.grad[0], 0.5 * torch.tensor(expected, dtype=F64), rtol=1e-12, atol=1e-12)


def test_k2_is_dpo():
    pairs = hand_logps()
    policy = torch.stack([pairs.policy_chosen, pairs.policy_rejected], dim=1)
    ref = torch.stack([pairs.ref_chosen, pairs.ref_rejected], dim=1)
    out = plackett_luce_loss(RankedLogps(policy, ref, torch.ones(3, 2, dtype=torch.bool), torch.ones(3, dtype=torch.long)),
                             beta=0.1)
    dpo = dpo_loss(pairs, beta=0.1)
    torch.testing.assert_close(out.losses, dpo.losses, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.chosen_rewards, dpo.chosen_rewards)
    torch.testing.assert_close(out.rejected_rewards, dpo.rejected_rewards)


def test_padding_changes_nothing():
    alone = plackett_luce_loss(ranked([[-4.0, -5.0]], [[-5.0, -5.0]], [1]), beta=0.5)
    padded = ranked([[-4.0, -5.0, 123.0], [-4.0, -5.0, -6.0]], [[-5.0, -5.0, -7.0], [-5.0, -5.0, -5.0]], [1, 2],
                    valid=[[True, True, False], [True, True, True]])
    out = plackett_luce_loss(padded, beta=0.5)
    assert float(out.losses[0].detach()) == pytest.approx(float(alone.losses[0].detach()), rel=1e-12)
    out.losses.sum().backward()
    assert float(padded.policy.grad[0, 2]) == 0.0 and torch.isfinite(padded.policy.grad).all()


@pytest.mark.parametrize("n_ranked, valid, match", [([2], [[True, True]], "n_ranked"),
                                                     ([1], [[True, False]], ">= 2 responses"),
                                                     ([1], [[False, True]], ">= 2 responses")])
def test_bad_inputs_raise(n_ranked, valid, match):
    with pytest.raises(ValueError, match=match):
        ranked([[-1.0, -2.0]], [[-1.0, -2.0]], n_ranked, valid)


def test_group_logps_with_grad_equals_separate_sequences():
    model = tiny_llama(seed=2).train()
    groups = [RankedGroup("a", (5, 6, 7), ((8, 9), (10,), (11, 12, 13)), 2),
              RankedGroup("b", (14,), ((15, 16), (17, 18, 19, 20)), 1)]
    batch = pack_groups([[g.as_group() for g in groups]], pad_id=0)  # both groups in one row
    sums, counts = group_logps(model, batch)
    sums.sum().backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    total = 0.0
    expected = []
    for g in groups:
        for r in g.responses:
            ids = torch.tensor([g.prompt_ids + r])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, len(g.prompt_ids) - 1:-1], -1)
            value = logp.gather(1, ids[0, len(g.prompt_ids):, None]).sum()
            expected.append(float(value.detach()))
            total = total + value
    total.backward()
    torch.testing.assert_close(sums.detach(), torch.tensor(expected), rtol=1e-5, atol=1e-4)
    assert counts.tolist() == [2, 1, 3, 2, 4]
    for name, param in model.named_parameters():
        torch.testing.assert_close(packed_grads[name], param.grad, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(ValueError, match="mask_special_tokens"):
        group_logps(model, batch, exclude_ids=torch.tensor([3]))


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_load_ranked_orders_best_first_and_shares_the_prompt(tmp_path):
    tok = word_tokenizer()
    path = write_rows(tmp_path / "r.jsonl", [
        {"id": "x", "prompt": "tell me ", "responses": ["no", "sure here", "sorry"], "ranks": [2, 1, 3]},
        {"prompt": "why ", "chosen": "yes", "rejected": ["no", "bad"]},
        {"prompt": "how ", "chosen": "good", "rejected": "bad"}])
    groups, mode = load_ranked(path, tok, TokenizerSettings(template="plain"))
    ids = lambda text: tuple(tok(text, add_special_tokens=False)["input_ids"]) + (tok.eos_token_id,)  # noqa: E731
    assert mode == "plain"
    assert groups[0].id == "x" and groups[0].responses == (ids("sure here"), ids("no"), ids("sorry"))
    assert groups[0].n_ranked == 2 and groups[0].prompt_ids == tuple(tok("tell me ")["input_ids"])
    assert groups[1].responses == (ids("yes"), ids("no"), ids("bad")) and groups[1].n_ranked == 1
    assert len(groups[2].responses) == 2 and groups[2].n_ranked == 1
    chat, mode = load_ranked(write_rows(tmp_path / "c.jsonl", [
        {"prompt": [{"role": "user", "content": "tell me"}], "chosen": "yes", "rejected": ["no", "bad"]}]),
        tok, TokenizerSettings())
    assert mode == "chat" and len(chat[0].responses) == 3
    cut, _ = load_ranked(path, tok, TokenizerSettings(template="plain", max_length=3))
    assert all(len(g.prompt_ids) + len(r) <= 3 for g in cut for r in g.responses)


@pytest.mark.parametrize("row, match", [
    ({"prompt": "a ", "responses": ["x", "y"], "ranks": [1, 1]}, "row 1: field 'ranks' has ties"),
    ({"prompt": "a ", "responses": ["x", "y"]}, "row 1: field 'ranks' must be a list of 2"),
    ({"prompt": "a ", "responses": ["x"], "ranks": [1]}, "at least 2 responses"),
    ({"prompt": "a ", "chosen": "x", "rejected": []}, "non-empty list"),
    ({"prompt": "a ", "chosen": ""}, "needs 'responses' and 'ranks', or 'chosen' and 'rejected'"),
    ({"responses": ["x", "y"], "ranks": [1, 2]}, "field 'prompt'"),
])
def test_bad_rows_are_one_line_user_errors(tmp_path, row, match):
    with pytest.raises(UserError, match=match):
        load_ranked(write_rows(tmp_path / "bad.jsonl", [row]), word_tokenizer(), TokenizerSettings())
