"""Datasets named by their Hub id, read with ``datasets.load_dataset``: ``org/name[@revision]``, or with the split
(and subset) inline, ``org/name[@revision][/subset]:split`` (``parse_hub_dataset``; e.g.
``HuggingFaceH4/ultrafeedback_binarized:test_prefs``), so every data argument can name its split.

A split is the inline one or ``--split`` (both: they must agree), else "test", else the only one, as for a saved
``DatasetDict``; ``subset`` is the dataset's config name (``load_dataset(repo, subset)``), inline or ``--subset``. The rows come back with the name they are known by
everywhere downstream, ``org/name@<commit>[/subset]:split`` (``hub_source_name``): it names the repo, the
commit the revision resolved to (the version folder datasets caches it under), the subset and the split,
so results and keys that record the source name change when any of them does.

Failures a user can fix are one ``UserError`` line (as ``dpo_eval.models.hub.hub_error``): unknown repo, gated
repo without a token, unknown revision, offline with nothing cached, unknown split or subset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpo_eval.errors import UserError
from dpo_eval.models.hub import hub_error, hub_settings, parse_hub_id

COMMIT = re.compile(r"^[0-9a-f]{40}$")
INLINE = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<revision>[^@/:\s]+))?"
                    r"(?:/(?P<subset>[^@/:\s]+))?:(?P<split>[^@/:\s]+)$")


@dataclass(frozen=True)
class HubDataset:
    """A Hub dataset argument taken apart: ``org/name[@revision][/subset][:split]``."""

    repo: str
    revision: str | None = None
    subset: str | None = None
    split: str | None = None


def parse_hub_dataset(path: str) -> HubDataset | None:
    """``org/name[@revision]`` or ``org/name[@revision][/subset]:split`` taken apart; None for anything else.

    The inline form is the source name this module writes (``hub_source_name``), so a recorded source reads back as
    the same commit, subset and split. A revision in the inline form cannot hold "/" (use a tag or commit)."""
    match = INLINE.match(path)
    if match is not None and parse_hub_id(match["repo"]) is not None:  # not a file name such as data/pairs.jsonl
        return HubDataset(match["repo"], match["revision"], match["subset"], match["split"])
    plain = parse_hub_id(path)
    return HubDataset(*plain) if plain is not None else None


def is_hub_dataset(path: str) -> bool:
    """Whether ``path`` is shaped like a Hub dataset argument and names no local file or folder."""
    return parse_hub_dataset(path) is not None and not Path(path).expanduser().exists()


def _merged(path: str, what: str, inline: str | None, flag: str | None) -> str | None:
    """The inline split/subset or the --flag's; both given and different is a UserError."""
    if inline is not None and flag is not None and inline != flag:
        raise UserError(f"{path} names {what} {inline!r} but --{what} {flag!r} was given: drop --{what}, or name the "
                        f"{what} once")
    return inline if inline is not None else flag


def _resolved_commit(loaded: Any, repo: str, revision: str | None) -> str:
    """The commit ``revision`` (default "main") resolved to: the version folder datasets cached the split under
    (named by the commit for a Hub dataset), else the huggingface_hub cache's ref; "unknown" if neither says."""
    revision = revision or "main"
    if COMMIT.match(revision):
        return revision
    for cached in getattr(loaded, "cache_files", None) or []:
        folder = Path(cached.get("filename", "")).parent.name
        if COMMIT.match(folder):
            return folder
    ref = Path(hub_settings().cache_dir) / f"datasets--{repo.replace('/', '--')}" / "refs" / revision
    try:
        return ref.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


def hub_source_name(repo: str, commit: str, subset: str | None, split: str) -> str:
    """``org/name@<commit>[/subset]:split``: the source name of a Hub dataset's split."""
    return f"{repo}@{commit}{f'/{subset}' if subset else ''}:{split}"


def _failures() -> tuple[type[BaseException], ...]:
    """What load_dataset raises for a reason the user can fix."""
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub import errors

    return (DatasetNotFoundError, errors.HfHubHTTPError, errors.EntryNotFoundError, errors.OfflineModeIsEnabled,
            getattr(errors, "HTTPError", OSError), ConnectionError, FileNotFoundError, OSError)


def _dataset_error(repo: str, revision: str | None, error: BaseException) -> UserError:
    """The one-line error for a failed load, by what the message and cause say."""
    from datasets.exceptions import DatasetNotFoundError

    if isinstance(error, DatasetNotFoundError):
        text = str(error).lower()
        if "gated" in text:
            return UserError(f"Hub dataset {repo} is gated: accept its terms on its Hub page, then set HF_TOKEN "
                             "(or run `hf auth login`)")
        if "revision" in text and revision:
            return UserError(f"Hub dataset {repo} has no revision {revision!r}: pass an existing branch, tag or "
                             f"commit ({repo}@main)")
        return UserError(f"Hub dataset {repo} not found (neither a local path nor a Hub repo; private repos need a "
                         "token): check the name, or set HF_TOKEN (or run `hf auth login`)")
    cause = error.__cause__
    return hub_error("dataset", repo, revision, cause if isinstance(cause, Exception) else error)


def _split_names(repo: str, revision: str | None, subset: str | None) -> list[str]:
    """The dataset's split names (metadata only)."""
    import datasets

    try:
        return list(datasets.get_dataset_split_names(repo, subset, revision=revision))
    except ValueError as error:
        raise _subset_error(repo, subset, error) from error
    except _failures() as error:
        raise _dataset_error(repo, revision, error) from error


def _subset_error(repo: str, subset: str | None, error: ValueError) -> UserError:
    """A missing or unknown config name, with the ones the dataset has."""
    names = re.search(r"\[([^\]]*)\]", str(error))
    available = names.group(1).replace("'", "") if names else "see the dataset's page"
    what = f"has no subset {subset!r}" if subset else "has several subsets"
    return UserError(f"Hub dataset {repo} {what}: pass one with --subset (available: {available})")


def _split_error(repo: str, split: str, available: list[str], is_inline: bool) -> UserError:
    """An unknown split, with the ones the dataset has and how to name one (inline or --split)."""
    how = f"name one as {repo}:SPLIT" if is_inline else "pass one with --split"
    return UserError(f"Hub dataset {repo}: no split {split!r}; available splits: {', '.join(available)}; {how}")


def read_hub_dataset(path: str, split: str | None, subset: str | None) -> tuple[list[dict[str, Any]], str]:
    """The rows of one split of Hub dataset ``path`` and its source name (see the module docstring); ``split`` and
    ``subset`` are the --split / --subset flags (None: not given)."""
    from dpo_eval.data.formats import pick_split

    named = parse_hub_dataset(path) or HubDataset(path)
    repo, revision = named.repo, named.revision
    subset = _merged(path, "subset", named.subset, subset)
    split = _merged(path, "split", named.split, split)
    if split is None:
        split = pick_split(_split_names(repo, revision, subset), None, f"Hub dataset {repo}")
    import datasets

    try:
        loaded = datasets.load_dataset(repo, subset, split=split, revision=revision)
    except ValueError as error:
        if "split" in str(error).lower():
            available = _split_names(repo, revision, subset)
            raise _split_error(repo, split, available, named.split is not None) from error
        raise _subset_error(repo, subset, error) from error
    except _failures() as error:
        raise _dataset_error(repo, revision, error) from error
    return loaded.to_list(), hub_source_name(repo, _resolved_commit(loaded, repo, revision), subset, split)
