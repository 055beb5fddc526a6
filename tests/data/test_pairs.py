"""Tests for dpo_eval.data.pairs: formats, file types, validation and skipping."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from dpo_eval.data.pairs import LoadedPairs, PreferencePair, load_pairs, read_records
from dpo_eval.errors import UserError

HH_SAMPLE = Path(__file__).resolve().parents[2] / "data" / "hh_harmless_sample.jsonl"
HH_FILE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"

TEXT_ROWS = [
    {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Rome", "extra": 1},
]


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


CHAT_ROWS = [
    {"chosen": [user("hi"), assistant("hello")], "rejected": [user("hi"), assistant("go away")]},
    {"chosen": [user("2+2?"), assistant("4")], "rejected": [user("2+2?"), assistant("5")]},
]

HH_MULTI = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: x\n\nAssistant:"
HH_ROWS = [
    {"chosen": "\n\nHuman: hi\n\nAssistant: Sure, here.", "rejected": "\n\nHuman: hi\n\nAssistant: No."},
    {"chosen": HH_MULTI + " y", "rejected": HH_MULTI + " z  "},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def load_error(path: Path, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        load_pairs(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- formats


def test_text_jsonl(tmp_path):
    loaded = load_pairs(write_jsonl(tmp_path / "d.jsonl", TEXT_ROWS))
    assert isinstance(loaded, LoadedPairs)
    assert loaded.format == "text"
    assert loaded.source == str(tmp_path / "d.jsonl")
    assert loaded.n_skipped == 0 and loaded.skip_reasons == ()
    assert loaded.pairs[0] == PreferencePair(id="0", subset="default", prompt="2+2?", chosen="4", rejected="5")
    assert loaded.pairs[1].id == "1"
    assert not loaded.pairs[0].is_chat


def test_chat_jsonl_infers_common_prefix(tmp_path):
    loaded = load_pairs(write_jsonl(tmp_path / "d.jsonl", CHAT_ROWS))
    assert loaded.format == "chat"
    pair = loaded.pairs[0]
    assert pair.is_chat
    assert pair.prompt == [user("hi")]
    assert pair.chosen == [assistant("hello")]
    assert pair.rejected == [assistant("go away")]
    assert pair.text_form is None


def test_chat_common_prefix_multi_turn(tmp_path):
    history = [user("a"), assistant("b"), user("c")]
    row = {"chosen": history + [assistant("good")], "rejected": history + [assistant("bad")]}
    pair = load_pairs(write_jsonl(tmp_path / "d.jsonl", [row])).pairs[0]
    assert pair.prompt == history
    assert pair.chosen == [assistant("good")]


def test_chat_without_shared_prompt_has_empty_prompt(tmp_path):
    row = {"chosen": [assistant("yes")], "rejected": [assistant("no")]}
    pair = load_pairs(write_jsonl(tmp_path / "d.jsonl", [row])).pairs[0]
    assert pair.prompt == []
    assert pair.is_chat


def test_chat_string_prompt_stripped_from_full_conversation(tmp_path):
    # UltraFeedback-binarized: a string prompt, responses hold the whole conversation.
    row = {
        "prompt": "hi",
        "chosen": [user("hi"), {"role": "assistant", "content": "hello", "extra": "x"}],
        "rejected": [user("hi"), assistant("bye")],
    }
    pair = load_pairs(write_jsonl(tmp_path / "d.jsonl", [row])).pairs[0]
    assert pair.prompt == [user("hi")]
    assert pair.chosen == [assistant("hello")]
    assert pair.rejected == [assistant("bye")]


def test_chat_message_prompt_kept_when_responses_are_only_completions(tmp_path):
    # TRL conversational style: prompt messages, responses are only the completion.
    prompt = [{"role": "system", "content": "be brief"}, user("hi")]
    row = {"prompt": prompt, "chosen": [assistant("hello")], "rejected": [assistant("bye")]}
    pair = load_pairs(write_jsonl(tmp_path / "d.jsonl", [row])).pairs[0]
    assert pair.prompt == prompt
    assert pair.chosen == [assistant("hello")]


def test_hh_single_and_multi_turn(tmp_path):
    loaded = load_pairs(write_jsonl(tmp_path / "d.jsonl", HH_ROWS))
    assert loaded.format == "hh"
    first, second = loaded.pairs
    assert first.prompt == [user("hi")]
    assert first.chosen == [assistant("Sure, here.")]
    assert first.rejected == [assistant("No.")]
    assert first.text_form == ("\n\nHuman: hi\n\nAssistant:", " Sure, here.", " No.")
    assert second.prompt == [user("hi"), assistant("hello"), user("x")]
    assert second.chosen == [assistant("y")]
    assert second.rejected == [assistant("z")]
    assert second.text_form == (HH_MULTI, " y", " z  ")
    assert second.is_chat


def test_hh_prompt_plus_response_reproduces_original(tmp_path):
    loaded = load_pairs(write_jsonl(tmp_path / "d.jsonl", HH_ROWS))
    for row, pair in zip(HH_ROWS, loaded.pairs, strict=True):
        prompt, chosen, rejected = pair.text_form
        assert prompt + chosen == row["chosen"]
        assert prompt + rejected == row["rejected"]


@pytest.mark.parametrize("fmt", ["text", "chat", "hh"])
def test_data_format_can_be_forced(tmp_path, fmt):
    rows = {"text": TEXT_ROWS, "chat": CHAT_ROWS, "hh": HH_ROWS}[fmt]
    assert load_pairs(write_jsonl(tmp_path / "d.jsonl", rows), data_format=fmt).format == fmt


def test_forced_format_that_does_not_fit_names_the_field(tmp_path):
    message = load_error(write_jsonl(tmp_path / "d.jsonl", CHAT_ROWS), data_format="text")
    assert "row 1" in message and "'prompt'" in message


def test_unknown_data_format(tmp_path):
    message = load_error(write_jsonl(tmp_path / "d.jsonl", TEXT_ROWS), data_format="sharegpt")
    assert "sharegpt" in message and "text" in message and "chat" in message


def test_string_chosen_without_prompt_or_transcript_is_an_error(tmp_path):
    message = load_error(write_jsonl(tmp_path / "d.jsonl", [{"chosen": "a", "rejected": "b"}]))
    assert "d.jsonl: row 1: field 'prompt' is missing" in message


# ---------------------------------------------------------------- file types


def test_json_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(CHAT_ROWS), encoding="utf-8")
    assert load_pairs(path).format == "chat"


@pytest.mark.parametrize("name", ["d.jsonl.gz", "d.json.gz"])
def test_gzip(tmp_path, name):
    path = tmp_path / name
    text = json.dumps(HH_ROWS) if name == "d.json.gz" else "".join(json.dumps(r) + "\n" for r in HH_ROWS)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(text)
    assert load_pairs(path).format == "hh"


def test_csv_text(tmp_path):
    path = tmp_path / "d.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "subset", "prompt", "chosen", "rejected"])
        writer.writeheader()
        writer.writerow({"id": "a", "subset": "math", "prompt": "2+2?", "chosen": "4", "rejected": "5"})
        writer.writerow({"id": "", "subset": "", "prompt": "multi\nline, \"quoted\"", "chosen": "x" * 200_000,
                         "rejected": "y"})
    loaded = load_pairs(path)
    assert loaded.format == "text"
    assert [(p.id, p.subset) for p in loaded.pairs] == [("a", "math"), ("1", "default")]
    assert loaded.pairs[1].prompt == "multi\nline, \"quoted\""
    assert len(loaded.pairs[1].chosen) == 200_000


def test_parquet_text_and_chat(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(TEXT_ROWS), tmp_path / "t.parquet")
    pq.write_table(pa.Table.from_pylist(CHAT_ROWS), tmp_path / "c.parquet")
    assert load_pairs(tmp_path / "t.parquet").pairs[1].chosen == "Paris"
    chat = load_pairs(tmp_path / "c.parquet")
    assert chat.format == "chat"
    assert chat.pairs[0].chosen == [assistant("hello")]


def test_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(CHAT_ROWS).save_to_disk(str(tmp_path / "ds"))
    loaded = load_pairs(tmp_path / "ds")
    assert loaded.format == "chat" and len(loaded.pairs) == 2
    with pytest.raises(UserError, match="has no splits"):
        load_pairs(tmp_path / "ds", split="test")


def test_saved_dataset_dict_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    path = tmp_path / "dd"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(TEXT_ROWS), "test": datasets.Dataset.from_list(TEXT_ROWS[:1])}
    ).save_to_disk(str(path))
    assert len(load_pairs(path).pairs) == 1  # "test" by default
    assert len(load_pairs(path, split="train").pairs) == 2
    message = load_error(path, split="validation")
    assert "'validation'" in message and "train" in message and "test" in message


def test_saved_dataset_dict_picks_only_split_or_asks(tmp_path):
    datasets = pytest.importorskip("datasets")
    only = tmp_path / "only"
    datasets.DatasetDict({"train_prefs": datasets.Dataset.from_list(TEXT_ROWS)}).save_to_disk(str(only))
    assert len(read_records(only)) == 2
    several = tmp_path / "several"
    datasets.DatasetDict(
        {"a": datasets.Dataset.from_list(TEXT_ROWS), "b": datasets.Dataset.from_list(TEXT_ROWS)}
    ).save_to_disk(str(several))
    message = load_error(several)
    assert "--split" in message and "a, b" in message


def test_read_records_returns_raw_rows(tmp_path):
    assert read_records(write_jsonl(tmp_path / "d.jsonl", TEXT_ROWS)) == TEXT_ROWS


# ---------------------------------------------------------------- file-level errors


def test_missing_path_lists_formats(tmp_path):
    message = load_error(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in message and ".parquet" in message and "save_to_disk" in message


def test_unknown_extension_lists_formats(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("hello", encoding="utf-8")
    message = load_error(path)
    assert "d.txt" in message and ".jsonl" in message and ".csv" in message


def test_plain_directory_is_not_a_dataset(tmp_path):
    message = load_error(tmp_path)
    assert "save_to_disk" in message


def test_split_for_single_file(tmp_path):
    message = load_error(write_jsonl(tmp_path / "d.jsonl", TEXT_ROWS), split="test")
    assert "--split" in message


def test_malformed_json_line_names_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(TEXT_ROWS[0]) + "\n\n{not json}\n", encoding="utf-8")
    message = load_error(path)
    assert "d.jsonl: line 3" in message and "not valid JSON" in message


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("[1, 2]\n", encoding="utf-8")
    assert "line 1" in load_error(path)


def test_malformed_json_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n{"prompt": "a",\n', encoding="utf-8")
    assert "d.json: line" in load_error(path)


def test_json_object_instead_of_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"prompt": ["a"], "chosen": ["b"], "rejected": ["c"]}), encoding="utf-8")
    assert "list of rows" in load_error(path)


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "d.jsonl"
    path.write_text(content, encoding="utf-8")
    assert "d.jsonl: has no rows" in load_error(path)


def test_empty_json_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("[]", encoding="utf-8")
    assert "no rows" in load_error(path)


def test_bad_limit(tmp_path):
    assert "limit" in load_error(write_jsonl(tmp_path / "d.jsonl", TEXT_ROWS), limit=0)


# ---------------------------------------------------------------- row-level errors


def good_text(**changes) -> dict:
    row = {"prompt": "p", "chosen": "c", "rejected": "r"}
    row.update(changes)
    return {k: v for k, v in row.items() if v is not ...}


@pytest.mark.parametrize(
    ("bad_row", "field", "problem"),
    [
        (good_text(rejected=...), "rejected", "is missing"),
        (good_text(rejected=None), "rejected", "is null"),
        (good_text(rejected=3), "rejected", "must be a string"),
        (good_text(rejected="   "), "rejected", "is empty"),
        (good_text(chosen=""), "chosen", "is empty"),
        (good_text(prompt=["p"]), "prompt", "must be a string"),
        (good_text(id=["x"]), "id", "must be a string or number"),
    ],
)
def test_text_row_errors_name_file_row_and_field(tmp_path, bad_row, field, problem):
    path = write_jsonl(tmp_path / "data.jsonl", [good_text(), good_text(), bad_row])
    message = load_error(path)
    assert message.startswith(f"{path}: row 3: field '{field}' {problem}")
    assert message.endswith("or pass --skip-invalid (a train config: skip_invalid: true) to skip bad rows")


def test_error_message_matches_documented_shape(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [good_text()] * 6 + [good_text(rejected="")])
    assert load_error(path) == (
        f"{path}: row 7: field 'rejected' is empty; fix the row or pass --skip-invalid (a train config: skip_invalid: true) to skip bad rows"
    )


def test_row_with_other_format_than_first(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [TEXT_ROWS[0], {"prompt": "p", **CHAT_ROWS[0]}])
    assert "row 2: field 'chosen' must be a string" in load_error(path)


@pytest.mark.parametrize(
    ("bad_row", "expected"),
    [
        ({"chosen": [user("hi"), assistant("a")], "rejected": "nope"}, "field 'rejected' must be a list of messages"),
        ({"chosen": [user("hi"), {"role": "assistant"}], "rejected": [user("hi"), assistant("b")]},
         "field 'chosen': message 2 must be an object"),
        ({"chosen": [user("hi"), user("a")], "rejected": [user("hi"), assistant("b")]},
         "field 'chosen': the last message has role 'user', expected 'assistant'"),
        ({"chosen": [user("hi"), assistant(" ")], "rejected": [user("hi"), assistant("b")]},
         "field 'chosen' is empty"),
        ({"chosen": [user("hi"), assistant("a")], "rejected": [user("hi"), assistant("a")]},
         "'chosen' and 'rejected' hold the same messages"),
        ({"chosen": [user("hi"), assistant("a")], "rejected": [user("hi"), assistant("a"), user("more"),
                                                                assistant("b")]},
         "field 'chosen' has no messages left after the prompt"),
        ({"prompt": 5, "chosen": [assistant("a")], "rejected": [assistant("b")]},
         "field 'prompt' must be a list of messages"),
        ({"chosen": [user("hi"), assistant("a")], "rejected": [user("hi"), assistant("b")], "subset": {"a": 1}},
         "field 'subset' must be a string or number"),
    ],
)
def test_chat_row_errors(tmp_path, bad_row, expected):
    path = write_jsonl(tmp_path / "c.jsonl", [CHAT_ROWS[0], bad_row])
    message = load_error(path)
    assert message.startswith(f"{path}: row 2: ")
    assert expected in message


@pytest.mark.parametrize(
    ("bad_row", "expected"),
    [
        ({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: bye\n\nAssistant: b"},
         "field 'rejected': the transcript up to its last '\\n\\nAssistant:' differs from 'chosen'"),
        ({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: hi\n\nAssistant:  "},
         "field 'rejected' is empty"),
        ({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "just text"},
         "field 'rejected' has no '\\n\\nAssistant:' turn"),
        ({"chosen": "preamble\n\nHuman: hi\n\nAssistant: a", "rejected": "preamble\n\nHuman: hi\n\nAssistant: b"},
         "does not start with"),
        ({"chosen": "\n\nHuman: hi\n\nAssistant: a"}, "field 'rejected' is missing"),
    ],
)
def test_hh_row_errors(tmp_path, bad_row, expected):
    path = write_jsonl(tmp_path / "h.jsonl", [HH_ROWS[0], bad_row])
    message = load_error(path)
    assert message.startswith(f"{path}: row 2: ")
    assert expected in message


def test_hh_transcript_without_leading_newlines(tmp_path):
    row = {"chosen": "Human: hi\n\nAssistant: a", "rejected": "Human: hi\n\nAssistant: b"}
    pair = load_pairs(write_jsonl(tmp_path / "h.jsonl", [row])).pairs[0]
    assert pair.prompt == [user("hi")]


# ---------------------------------------------------------------- skipping, ids, subsets, limit


def test_skip_invalid_counts_and_reports(tmp_path):
    rows = [good_text(chosen=""), good_text(), good_text(rejected=...), good_text(), good_text(prompt=None)]
    loaded = load_pairs(write_jsonl(tmp_path / "d.jsonl", rows), skip_invalid=True)
    assert [p.id for p in loaded.pairs] == ["1", "3"]  # ids are the row indices in the file
    assert loaded.n_skipped == 3
    assert loaded.skip_reasons == (
        "row 1: field 'chosen' is empty",
        "row 3: field 'rejected' is missing",
        "row 5: field 'prompt' is null",
    )


def test_skip_reasons_keep_first_twenty(tmp_path):
    rows = [good_text(rejected="")] * 25 + [good_text()]
    loaded = load_pairs(write_jsonl(tmp_path / "d.jsonl", rows), skip_invalid=True)
    assert loaded.n_skipped == 25
    assert len(loaded.skip_reasons) == 20
    assert loaded.skip_reasons[-1].startswith("row 20:")


def test_skip_invalid_detects_format_from_first_valid_row(tmp_path):
    rows = [{"chosen": 1, "rejected": 2}, HH_ROWS[0], CHAT_ROWS[0]]
    loaded = load_pairs(write_jsonl(tmp_path / "d.jsonl", rows), skip_invalid=True)
    assert loaded.format == "hh"
    assert loaded.n_skipped == 2


def test_skip_invalid_with_no_valid_rows_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [good_text(chosen=""), good_text(rejected=None)])
    message = load_error(path, skip_invalid=True)
    assert "no valid rows" in message and "2 skipped" in message and "row 1" in message


def test_ids_and_subsets(tmp_path):
    rows = [good_text(id=7, subset="math"), good_text(id="abc"), good_text(subset=""), good_text(id=None)]
    pairs = load_pairs(write_jsonl(tmp_path / "d.jsonl", rows)).pairs
    assert [p.id for p in pairs] == ["7", "abc", "2", "3"]
    assert [p.subset for p in pairs] == ["math", "default", "default", "default"]


def test_duplicate_ids(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [good_text(id="a"), good_text(id="b"), good_text(id="a")])
    message = load_error(path)
    assert message.startswith(f"{path}: row 3: field 'id'")
    assert "'a'" in message and "row 1" in message


def test_explicit_id_colliding_with_default_id(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [good_text(id="1"), good_text()])
    assert "field 'id'" in load_error(path)


def test_limit_keeps_first_valid_pairs(tmp_path):
    rows = [good_text(chosen=""), good_text(), good_text(), good_text(), good_text(rejected="")]
    loaded = load_pairs(write_jsonl(tmp_path / "d.jsonl", rows), skip_invalid=True, limit=2)
    assert [p.id for p in loaded.pairs] == ["1", "2"]
    assert loaded.n_skipped == 1


def test_limit_stops_before_later_bad_rows(tmp_path):
    rows = [good_text(), good_text(chosen="")]
    assert len(load_pairs(write_jsonl(tmp_path / "d.jsonl", rows), limit=1).pairs) == 1


def test_pairs_are_frozen(tmp_path):
    pair = load_pairs(write_jsonl(tmp_path / "d.jsonl", TEXT_ROWS)).pairs[0]
    with pytest.raises(AttributeError):
        pair.id = "x"


# ---------------------------------------------------------------- real data


def _check_hh_transcripts(loaded, originals_by_id: dict) -> None:
    """Each loaded pair rebuilds its transcripts exactly and splits at the last assistant turn."""
    assert loaded.format == "hh"
    for pair in loaded.pairs[:200]:
        original = originals_by_id[pair.id]
        prompt, chosen, rejected = pair.text_form
        assert prompt + chosen == original["chosen"]
        assert prompt + rejected == original["rejected"]
        assert prompt.endswith("\n\nAssistant:")
        assert pair.prompt[0]["role"] == "user" and pair.prompt[-1]["role"] == "user"
        assert pair.chosen == [{"role": "assistant", "content": chosen.strip()}]


def test_real_hh_rlhf_sample_in_repo():
    """The 32-pair sample of the HH-RLHF harmless-base test split shipped under data/ (any checkout)."""
    originals = read_records(HH_SAMPLE)
    loaded = load_pairs(HH_SAMPLE)
    assert len(loaded.pairs) == len(originals) == 32 and loaded.n_skipped == 0
    assert {p.subset for p in loaded.pairs} == {"harmless-base"}
    _check_hh_transcripts(loaded, {row["id"]: row for row in originals})


def test_real_hh_rlhf_harmless_base_full_split():
    """The whole split from ../shared (present on the development machines only)."""
    if not HH_FILE.is_file():
        pytest.skip(f"{HH_FILE} is not available (the bundled sample is tested above)")
    originals = read_records(HH_FILE)
    loaded = load_pairs(HH_FILE, skip_invalid=True)
    # The test split has a few rows with empty responses or transcripts that differ before the last turn.
    assert 0 < loaded.n_skipped < 20
    assert len(loaded.pairs) + loaded.n_skipped == len(originals)
    _check_hh_transcripts(loaded, {str(i): row for i, row in enumerate(originals)})


def test_columns_of_no_pair_layout_are_one_line_naming_found_and_expected(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(UserError) as raised:
        load_pairs(path)
    assert str(raised.value) == (
        f"{path}: columns question, answer match no preference-pair layout; expected prompt, chosen, rejected "
        "(strings: RewardBench, TRL; or message lists: UltraFeedback-binarized) or chosen, rejected (HH-RLHF "
        "transcripts): rename the columns, or pass a file in one of these layouts")


def test_prompt_fields_of_alpacaeval_and_arena_hard():
    from dpo_eval.data.prompts import prompt_field, prompt_id_field

    assert prompt_field({"instruction": "Name a colour."}, "f: row 1") == "Name a colour."
    arena = {"question_id": "q9", "turns": [{"content": "Write a poem."}]}
    assert (prompt_field(arena, "f: row 1"), prompt_id_field(arena, 0)) == ("Write a poem.", "q9")
    assert prompt_id_field({"uid": "u1", "prompt": "p"}, 3) == "u1" and prompt_id_field({"prompt": "p"}, 3) == "3"
    with pytest.raises(UserError, match=r"columns found: question_id, turns;"):
        prompt_field({"question_id": "q", "turns": [{"content": "a"}, {"content": "b"}]}, "f: row 1")
