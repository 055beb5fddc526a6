"""Datasets named by their Hub id (``org/name`` or ``org/name@revision``), read with ``datasets.load_dataset``.

A split is chosen as for a saved ``DatasetDict`` (``--split``, else "test", else the only one); ``subset`` is the
dataset's config name (``load_dataset(repo, subset)``). The rows come back with the name they are known by
everywhere downstream, ``org/name@<commit>[/subset]:split`` (``hub_source_name``): it names the repo, the
commit the revision resolved to (the version folder datasets caches it under), the subset and the split,
so results and keys that record the source name change when any of them does.

Failures a user can fix are one ``UserError`` line (as ``dpo_eval.models.hub.hub_error``): unknown repo, gated
repo without a token, unknown revision, offline with nothing cached, unknown split or subset.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dpo_eval.errors import UserError
from dpo_eval.models.hub import hub_error, hub_settings, parse_hub_id

COMMIT = re.compile(r"^[0-9a-f]{40}$")


def is_hub_dataset(path: str) -> bool:
    """Whether ``path`` is shaped like a Hub id and names no local file or folder."""
    return parse_hub_id(path) is not None and not Path(path).expanduser().exists()


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


def read_hub_dataset(path: str, split: str | None, subset: str | None) -> tuple[list[dict[str, Any]], str]:
    """The rows of one split of Hub dataset ``path`` and its source name (see the module docstring)."""
    from dpo_eval.data.formats import pick_split

    repo, revision = parse_hub_id(path) or (path, None)
    if split is None:
        split = pick_split(_split_names(repo, revision, subset), None, f"Hub dataset {repo}")
    import datasets

    try:
        loaded = datasets.load_dataset(repo, subset, split=split, revision=revision)
    except ValueError as error:
        if "split" in str(error).lower():
            available = ", ".join(_split_names(repo, revision, subset))
            raise UserError(f"Hub dataset {repo}: no split {split!r}; available splits: {available}; pass one with "
                            "--split") from error
        raise _subset_error(repo, subset, error) from error
    except _failures() as error:
        raise _dataset_error(repo, revision, error) from error
    return loaded.to_list(), hub_source_name(repo, _resolved_commit(loaded, repo, revision), subset, split)
