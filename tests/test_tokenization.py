"""Tokenization: chat templates, TRL's plain-text convention, boundary merges, truncation."""

from __future__ import annotations

import pytest
from conftest import word_tokenizer

from dpo_eval.data.pairs import PreferencePair
from dpo_eval.errors import UserError
from dpo_eval.tokenization import TokenizerSettings, tokenize_pairs, truncate


def ids(tok, text):
    return tuple(tok(text, add_special_tokens=False)["input_ids"])


def test_plain_text_pairs_follow_trl_convention():
    tok = word_tokenizer()
    pair = PreferencePair("0", "s", "tell me about ", "the cat", "no")
    out = tokenize_pairs([pair], tok, TokenizerSettings()).pairs[0]
    assert out.prompt_ids == ids(tok, "tell me about")
    assert out.chosen_ids == ids(tok, "the cat") + (tok.eos_token_id,)
    assert out.rejected_ids == ids(tok, "no") + (tok.eos_token_id,)


def test_boundary_merge_moves_the_prompt_boundary_left():
    tok = word_tokenizer()
    # "tell me" + "about" -> "tell meabout": the last prompt word merges with the response (one <unk>)
    pair = PreferencePair("0", "s", "tell me", "about", " sure")
    out = tokenize_pairs([pair], tok, TokenizerSettings()).pairs[0]
    assert out.prompt_ids == ids(tok, "tell")
    assert out.prompt_ids + out.chosen_ids == ids(tok, "tell meabout") + (tok.eos_token_id,)
    assert out.prompt_ids + out.rejected_ids == ids(tok, "tell me sure") + (tok.eos_token_id,)


def test_chat_pairs_use_the_template_and_share_the_prompt():
    tok = word_tokenizer()
    prompt = [{"role": "user", "content": "why"}]
    pair = PreferencePair("0", "s", prompt, [{"role": "assistant", "content": "yes"}],
                          [{"role": "assistant", "content": "no"}])
    out = tokenize_pairs([pair], tok, TokenizerSettings())
    assert out.mode == "chat"
    first = out.pairs[0]
    assert first.prompt_ids == ids(tok, "<|user|> why <eos> <|assistant|>")
    assert first.chosen_ids == ids(tok, "<|assistant|> yes <eos>")[1:]
    assert first.rejected_ids == ids(tok, "no <eos>")


def test_chat_data_without_template_is_refused():
    tok = word_tokenizer()
    tok.chat_template = None
    pair = PreferencePair("0", "s", [{"role": "user", "content": "why"}], [{"role": "assistant", "content": "yes"}],
                          [{"role": "assistant", "content": "no"}])
    with pytest.raises(UserError, match="no chat template"):
        tokenize_pairs([pair], tok, TokenizerSettings())


def test_hh_text_form_used_in_plain_mode():
    tok = word_tokenizer()
    pair = PreferencePair("0", "s", [{"role": "user", "content": "why"}], [{"role": "assistant", "content": "yes"}],
                          [{"role": "assistant", "content": "no"}], text_form=("why ", "yes", "no"))
    out = tokenize_pairs([pair], tok, TokenizerSettings(template="plain"))
    assert out.mode == "plain" and out.pairs[0].prompt_ids == ids(tok, "why")


@pytest.mark.parametrize("mode, expected", [
    # prompt 5, chosen 3, rejected 2, max 6: keep_end keeps the last 3 prompt tokens, responses whole
    ("keep_end", ([3, 4, 5], [10, 11, 12], [20, 21])),
    # keep_start keeps the prompt and cuts responses to 6 - 5 = 1 token
    ("keep_start", ([1, 2, 3, 4, 5], [10], [20])),
])
def test_truncation_modes(mode, expected):
    got = truncate([1, 2, 3, 4, 5], [10, 11, 12], [20, 21], 6, mode)
    assert got[:3] == expected and got[3] is True


def test_truncation_keeps_one_prompt_token_and_reports_no_cut_when_short():
    prompt, chosen, _, cut = truncate([1, 2, 3], [10] * 8, [20], 5, "keep_end")
    assert prompt == [3] and chosen == [10] * 4 and cut
    assert truncate([1], [2], [3], 5, "keep_end")[3] is False


def test_untokenizable_pairs_name_their_row_and_can_be_skipped():
    tok = word_tokenizer()
    good = PreferencePair("0", "s", "tell me ", "yes", "no", where="d.jsonl: row 1")
    empty_prompt = PreferencePair("1", "s", "", "yes", "no", where="d.jsonl: row 2")
    with pytest.raises(UserError, match=r"^d\.jsonl: row 2: the prompt has no tokens.*--skip-invalid"):
        tokenize_pairs([good, empty_prompt], tok, TokenizerSettings())
    out = tokenize_pairs([good, empty_prompt], tok, TokenizerSettings(), skip_invalid=True)
    assert [p.id for p in out.pairs] == ["0"] and out.n_skipped == 1
    assert out.skip_reasons[0].startswith("d.jsonl: row 2:")
    with pytest.raises(UserError, match="no pair could be tokenized"):
        tokenize_pairs([empty_prompt], tok, TokenizerSettings(), skip_invalid=True)
    # Pairs built in code (no file) are named by id.
    with pytest.raises(UserError, match=r"^pair '1':"):
        tokenize_pairs([PreferencePair("1", "s", "", "yes", "no")], tok, TokenizerSettings())
