"""`--compat rewardbench`: RewardBench's DPO tokenization, reimplemented from its description.

Source read: allenai/reward-bench, rewardbench/dpo.py (``DPOInference.tokenize_row``,
``build_tokenized_answer``, ``get_batch_logps``) and rewardbench/utils.py
(``prepare_dialogue_from_tokenizer``). What it does to one pair, and what this module does too:

1. The prompt is rendered with the chat template *without* a generation prompt, and each full
   conversation (prompt + assistant response) with the template. The scored text of a response is
   the conversation past the prompt's text, so the assistant header (and the template's own
   end-of-turn) are scored as part of the response. (RewardBench's stored dpo.py once scored the
   whole conversation again after the prompt: its issue #140, fixed by PR #142 "Fix DPO prompts".)
2. Tokens: ``tok(prompt_text + response_text)`` without special tokens; the prompt is
   ``tok(prompt_text)``'s length of it, one token shorter when the last prompt token merges across
   the boundary. Each response finds its own boundary, so the two prompts can differ.
3. BOS is prepended to each prompt by hand (EOS where the tokenizer has no BOS, as RewardBench sets
   it for such tokenizers) and EOS is appended to each response, after the template's end-of-turn.
4. When a prompt plus the longer response (EOS included) passes MAX_LENGTH = 2048 tokens, that
   prompt keeps its last MAX_PROMPT_LENGTH = 128 tokens (the BOS may go with the rest); when it is
   still too long, both responses keep their first MAX_LENGTH - MAX_PROMPT_LENGTH = 1920 tokens.
5. The score is the summed log-prob ratio without beta (reference-free: sum, mean or -L2 norm of
   the per-token log-probs), ``dpo_eval.metrics.rewardbench.sequence_values``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpo_eval.data.pairs import PreferencePair
from dpo_eval.tokenization import InvalidPairError

MAX_LENGTH = 2048
MAX_PROMPT_LENGTH = 128


@dataclass(frozen=True)
class CompatPair:
    """Token ids of one pair under RewardBench's conventions: each response with its own prompt."""

    prompt_chosen: tuple[int, ...]
    chosen: tuple[int, ...]
    prompt_rejected: tuple[int, ...]
    rejected: tuple[int, ...]
    is_truncated: bool


def _messages(pair: PreferencePair) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen, rejected) as chat messages: a plain prompt becomes one user turn."""
    if pair.is_chat:
        return list(pair.prompt), list(pair.chosen), list(pair.rejected)
    prompt = [{"role": "user", "content": pair.prompt}]
    return prompt, [{"role": "assistant", "content": pair.chosen}], [{"role": "assistant", "content": pair.rejected}]


def response_text(tokenizer, prompt: list[dict], response: list[dict], where: str) -> tuple[str, str]:
    """(prompt text without a generation prompt, the conversation's text past it)."""
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False)
    full_text = tokenizer.apply_chat_template(prompt + response, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise InvalidPairError(f"{where}: the chat template's prompt text is not a prefix of the conversation's "
                               "text, which --compat rewardbench needs; use --compat none")
    return prompt_text, full_text[len(prompt_text):]


def split_answer(tokenizer, prompt_text: str, answer_text: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of tok(prompt_text + answer_text), the boundary moved one token left
    when tok(prompt_text) is not a prefix of it (a token merged across the boundary)."""
    full = list(tokenizer(prompt_text + answer_text, add_special_tokens=False)["input_ids"])
    prompt = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    start = len(prompt) if full[: len(prompt)] == prompt else len(prompt) - 1
    return full[:start], full[start:]


def truncate(prompts: list[list[int]], responses: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
    """RewardBench's truncation of a pair (step 4 of the module docstring); the longer response's
    length is taken before any cut, and each prompt is judged on its own length."""
    longer = max(len(r) for r in responses)
    prompts = [p[-MAX_PROMPT_LENGTH:] if len(p) + longer > MAX_LENGTH else p for p in prompts]
    responses = [r[: MAX_LENGTH - MAX_PROMPT_LENGTH] if len(p) + longer > MAX_LENGTH else r
                 for p, r in zip(prompts, responses)]
    return prompts, responses


def tokenize_rewardbench(pair: PreferencePair, tokenizer) -> CompatPair:
    """One pair tokenized as RewardBench's DPO path does (module docstring)."""
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidPairError("--compat rewardbench needs a tokenizer with a chat template (RewardBench's "
                               "fastchat templates are not supported); use --compat none")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise InvalidPairError("--compat rewardbench needs a BOS or EOS token in the tokenizer; use --compat none")
    prompt, chosen, rejected = _messages(pair)
    prompts, responses = [], []
    for response in (chosen, rejected):
        prompt_ids, answer_ids = split_answer(tokenizer, *response_text(tokenizer, prompt, response, pair.location))
        prompts.append([bos] + prompt_ids)
        responses.append(answer_ids + [tokenizer.eos_token_id])
    lengths = [len(x) for x in prompts + responses]
    prompts, responses = truncate(prompts, responses)
    cut = [len(x) for x in prompts + responses] != lengths
    return CompatPair(tuple(prompts[0]), tuple(responses[0]), tuple(prompts[1]), tuple(responses[1]), cut)
