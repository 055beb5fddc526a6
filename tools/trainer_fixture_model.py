"""A tiny random Llama model and a word-level tokenizer, made locally (no hub), for the trainer fixtures.

Run with any Python that has torch, transformers and tokenizers (each trainer's own venv):
    python tools/trainer_fixture_model.py OUT_DIR
Writes a save_pretrained folder: config.json, model.safetensors, tokenizer.json, tokenizer_config.json
(with a chat template), special_tokens_map.json, generation_config.json. Seeded: the same files each run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

WORDS = ("the a is was good bad answer question yes no cat dog sun moon red blue one two three four five "
         "helpful harmful polite rude correct wrong why how what because please thanks hello world").split()
SPECIAL = ("<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>")
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' </s> ' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}")
PAIRS = [
    ("is the sun red", "no the sun is yellow because", "yes"),
    ("what is one and one", "two", "five"),
    ("is a cat a dog", "no a cat is a cat", "yes a cat is a dog"),
    ("why please", "because the answer is good", "no"),
    ("how is the moon", "the moon is good", "bad bad bad"),
    ("hello", "hello world thanks", "rude"),
    ("what is blue", "the sun is not blue the moon is", "red"),
    ("is three one", "no three is three", "yes"),
]
"""(prompt, chosen, rejected): eight preference pairs in the tokenizer's words."""


def make_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([*SPECIAL, *WORDS, "yellow", "not", "and"])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)


def make_model(out: Path, vocab_size: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=4, max_position_embeddings=128,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         torch_dtype="float32")
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)


def write_pairs(path: Path, style: str) -> None:
    """The pairs as JSON: ``trl`` (prompt/chosen/rejected strings), ``alpaca`` (LLaMA-Factory's ranking
    format: instruction, chosen, rejected) or ``messages`` (torchtune: chosen/rejected message lists)."""
    rows = []
    for prompt, chosen, rejected in PAIRS:
        if style == "trl":
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        elif style == "alpaca":
            rows.append({"instruction": prompt, "chosen": chosen, "rejected": rejected})
        else:
            user = {"role": "user", "content": prompt}
            rows.append({"chosen": [user, {"role": "assistant", "content": chosen}],
                         "rejected": [user, {"role": "assistant", "content": rejected}]})
    path.write_text(json.dumps(rows, indent=1) + "\n")


def main(out: str) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    make_tokenizer(folder)
    make_model(folder, vocab_size=len(SPECIAL) + len(WORDS) + 3)


if __name__ == "__main__":
    main(sys.argv[1])


class TorchtuneTokenizer:
    """torchtune ModelTokenizer over the fixture's HF tokenizer.json (torchtune 0.6.1 ships the HF
    tokenizer only as a BaseTokenizer): messages joined by tokenize_messages_no_special_tokens, BOS/EOS
    from tokenizer_config.json. Named by the torchtune fixture's YAML as
    ``trainer_fixture_model.TorchtuneTokenizer`` (tools/ on PYTHONPATH)."""

    def __init__(self, path: str, max_seq_len: int = 64):
        from torchtune.modules.transforms.tokenizers import HuggingFaceBaseTokenizer

        self.base = HuggingFaceBaseTokenizer(f"{path}/tokenizer.json",
                                             tokenizer_config_json_path=f"{path}/tokenizer_config.json")
        self.max_seq_len, self.special_tokens = max_seq_len, {}
        self.bos_id, self.eos_id, self.pad_id = self.base.bos_id, self.base.eos_id, 0

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = True, **kwargs) -> list[int]:
        return self.base.encode(text, add_bos=add_bos, add_eos=add_eos)

    def decode(self, token_ids: list[int], **kwargs) -> str:
        return self.base.decode(token_ids)

    def tokenize_messages(self, messages, add_eos: bool = True, **kwargs):
        from torchtune.modules.transforms.tokenizers import tokenize_messages_no_special_tokens

        return tokenize_messages_no_special_tokens(self, messages, bos_id=self.bos_id,
                                                   eos_id=self.eos_id if add_eos else None)

    def __call__(self, sample: dict, inference: bool = False) -> dict:
        tokens, mask = self.tokenize_messages(sample.pop("messages"))
        return {**sample, "tokens": tokens, "mask": mask}
