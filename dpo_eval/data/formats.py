"""Read raw rows from the file formats dpo-eval accepts.

Every reader returns a list of dicts (one per row) and turns user-fixable problems (missing file,
unknown extension, malformed JSON, unknown split) into a one-line `UserError`. A path that names no local
file or folder and is shaped like ``org/name[@revision][/subset][:split]`` is a Hub dataset (``dpo_eval.data.hub_data``).
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from dpo_eval.errors import UserError

SUPPORTED_FORMATS = (
    ".jsonl, .json (a list of rows), .jsonl.gz, .json.gz, .parquet, .csv, "
    "a directory written by datasets' save_to_disk"
)
_CSV_FIELD_LIMIT = 2**31 - 1


def read_records(path: str | Path, split: str | None = None, subset: str | None = None) -> list[dict[str, Any]]:
    """Return the raw rows of a data file, a `datasets` directory saved with `save_to_disk`, or a Hub dataset.

    `split` picks one split of a saved `DatasetDict` or Hub dataset; without it "test" is used, or the
    only split. Giving `split` for a source that has no splits is an error, not silently ignored.
    `subset`: a Hub dataset's config name (``dpo_eval.data.hub_data``).
    """
    return read_source(path, split, subset)[0]


def read_source(path: str | Path, split: str | None = None, subset: str | None = None
                ) -> tuple[list[dict[str, Any]], str]:
    """`read_records`' rows and the source's name: the path as given, or for a Hub dataset
    ``org/name@<commit>[/subset]:split`` (repo, resolved commit, subset and split)."""
    from dpo_eval.data.hub_data import is_hub_dataset, read_hub_dataset

    source = str(path)
    p = Path(path)
    if is_hub_dataset(source):
        return read_hub_dataset(source, split, subset)
    if subset is not None:
        raise UserError(f"{source}: --subset {subset!r} was given but only a Hub dataset has subsets; drop --subset")
    if p.is_dir():
        return _read_saved_dataset(p, source, split), source
    if not p.is_file():
        raise UserError(
            f"{source}: no such file or directory; give a path to {SUPPORTED_FORMATS} "
            "or a Hub dataset id (org/name, or org/name:split)"
        )
    if split is not None:
        raise UserError(f"{source}: --split {split!r} was given but a single file has no splits; drop --split")
    reader = _reader_for(p.name.lower())
    if reader is None:
        raise UserError(f"{source}: unsupported file type; use {SUPPORTED_FORMATS}")
    return reader(p, source), source


def _reader_for(name: str) -> Callable[[Path, str], list[dict[str, Any]]] | None:
    """Pick the reader for a lower-cased file name, or None for an unknown extension."""
    readers: dict[str, Callable[[Path, str], list[dict[str, Any]]]] = {
        ".jsonl.gz": _read_jsonl,
        ".json.gz": _read_json,
        ".jsonl": _read_jsonl,
        ".json": _read_json,
        ".parquet": _read_parquet,
        ".csv": _read_csv,
    }
    for suffix, reader in readers.items():
        if name.endswith(suffix):
            return reader
    return None


def _open_text(p: Path) -> IO[str]:
    """Open a (possibly gzip-compressed) UTF-8 text file."""
    if p.name.lower().endswith(".gz"):
        return gzip.open(p, "rt", encoding="utf-8")
    return open(p, encoding="utf-8")


def _read_text(p: Path, source: str) -> str:
    """Read a whole text file, turning decoding and gzip problems into a UserError."""
    try:
        with _open_text(p) as f:
            return f.read()
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise UserError(f"{source}: cannot read the file ({e}); check it is UTF-8 text (gzip for .gz)") from e


def _read_jsonl(p: Path, source: str) -> list[dict[str, Any]]:
    """One JSON object per line; blank lines are ignored."""
    rows = []
    for lineno, line in enumerate(_read_text(p, source).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{source}: line {lineno} is not valid JSON ({e.msg}); fix or remove that line") from e
        if not isinstance(row, dict):
            raise UserError(
                f"{source}: line {lineno} is a JSON {type(row).__name__}, not an object; "
                "each line must be one row like {\"prompt\": ..., \"chosen\": ..., \"rejected\": ...}"
            )
        rows.append(row)
    return rows


def _read_json(p: Path, source: str) -> list[dict[str, Any]]:
    """A JSON list of row objects."""
    try:
        data = json.loads(_read_text(p, source))
    except json.JSONDecodeError as e:
        raise UserError(
            f"{source}: line {e.lineno} is not valid JSON ({e.msg}); fix the file "
            "(one JSON object per line belongs in a .jsonl file)"
        ) from e
    if not isinstance(data, list):
        raise UserError(f"{source}: expected a JSON list of rows, got a JSON {type(data).__name__}; "
                        "write the rows as [{...}, {...}] or as a .jsonl file")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise UserError(f"{source}: row {i + 1} is a JSON {type(row).__name__}, not an object; "
                            "every element of the list must be a row object")
    return data


def _read_parquet(p: Path, source: str) -> list[dict[str, Any]]:
    """All rows of a parquet file, nested lists/structs as Python lists/dicts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(p).to_pylist()
    except (OSError, pa.ArrowException) as e:
        raise UserError(f"{source}: cannot read the parquet file ({e}); check it is a valid parquet file") from e


def _read_csv(p: Path, source: str) -> list[dict[str, Any]]:
    """Rows of a CSV file with a header line; every value is a string."""
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))  # long responses exceed the default
    try:
        with open(p, encoding="utf-8-sig", newline="") as f:
            return [dict(row) for row in csv.DictReader(f)]
    except (csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"{source}: cannot parse the CSV file ({e}); check it is UTF-8 CSV with a header row") from e


def _read_saved_dataset(p: Path, source: str, split: str | None) -> list[dict[str, Any]]:
    """Rows of a `Dataset` or one split of a `DatasetDict` written by `save_to_disk`."""
    is_dict = (p / "dataset_dict.json").is_file()
    if not is_dict and not (p / "dataset_info.json").is_file():
        raise UserError(
            f"{source}: is a directory but not one written by datasets' save_to_disk "
            f"(no dataset_info.json or dataset_dict.json); use {SUPPORTED_FORMATS}"
        )
    import datasets

    try:
        loaded = datasets.load_from_disk(str(p))
    except (OSError, ValueError) as e:
        raise UserError(f"{source}: cannot load the saved dataset ({e}); save it again with save_to_disk") from e
    if isinstance(loaded, datasets.DatasetDict):
        return loaded[pick_split(list(loaded), split, source)].to_list()
    if split is not None:
        raise UserError(f"{source}: --split {split!r} was given but this saved Dataset has no splits; drop --split")
    return loaded.to_list()


def pick_split(available: list[str], split: str | None, source: str) -> str:
    """The requested split, else "test", else the only split; a UserError otherwise."""
    if split is not None:
        if split in available:
            return split
        raise UserError(f"{source}: no split {split!r}; available splits: {', '.join(available)}; pass one with --split")
    if "test" in available:
        return "test"
    if len(available) == 1:
        return available[0]
    raise UserError(
        f"{source}: has several splits and none is 'test'; choose one with --split "
        f"(available: {', '.join(available)})"
    )
