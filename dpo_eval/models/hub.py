"""Models named by their Hugging Face Hub id: ``org/name`` or ``org/name@revision``.

``resolve_hub_model`` downloads only the files a model needs (``HUB_MODEL_FILES``: safetensors weights,
config, tokenizer, chat template, generation config, adapter files) with ``huggingface_hub``'s
``snapshot_download`` into its cache (``HF_HOME``), honouring ``HF_HUB_OFFLINE=1``; the token is
``huggingface_hub``'s own (``HF_TOKEN`` or the saved hub login), never passed around or written by
dpo-eval. Download progress is ``huggingface_hub``'s progress bars.

A local folder with the same name wins (``dpo_eval.models.locate`` checks the disk first), as in
transformers. Each Hub failure a user can fix (unknown repo, gated repo without a token, unknown
revision, offline with nothing cached, no network) is one ``UserError`` line.

Pickled ``.bin`` weights are never downloaded: a Hub model without safetensors is refused.

The snapshot's files are links into the cache's ``blobs/`` folder, named by the file's hash as the
Hub gave it (``X-Linked-Etag``): the sha256 of an LFS file (every weight file), the git blob sha1 of
a small one. ``hub_file_digests`` reads those names, so a 15 GB model is never rehashed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from dpo_eval.errors import UserError

HUB_MODEL_FILES = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
    "adapter_config.json",
)
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<revision>[^@\s]+))?$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
TOKEN_HINT = "set HF_TOKEN (or run `hf auth login`)"


@dataclass(frozen=True)
class HubModel:
    """A Hub model repo resolved to a snapshot in the local cache."""

    repo: str
    """``org/name``."""
    revision: str | None
    """The revision as the user asked for it (branch, tag or commit), or None for the default branch."""
    commit: str
    """The commit the revision resolved to (the snapshot folder's name)."""
    folder: Path
    """The snapshot folder in the huggingface_hub cache."""

    @property
    def name(self) -> str:
        """``org/name@commit``: what the fingerprint records."""
        return f"{self.repo}@{self.commit}"


def parse_hub_id(path: str) -> tuple[str, str | None] | None:
    """``(repo, revision)`` for ``org/name`` or ``org/name@revision``; None for anything else."""
    match = HUB_ID.match(path)
    if match is None or path.endswith((".gguf", ".json", ".jsonl", ".parquet", ".csv")):
        return None
    return match["repo"], match["revision"]


def is_hub_id(path: str) -> bool:
    """Whether ``path`` is shaped like a Hub id and no local file or folder has that name."""
    return parse_hub_id(path) is not None and not Path(path).expanduser().exists()


def _is_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it (read now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_error(what: str, repo: str, revision: str | None, error: Exception) -> UserError:
    """The one-line UserError for a failed Hub call on ``repo`` (``what``: "model" or "dataset")."""
    from huggingface_hub import errors

    at = f"@{revision}" if revision else ""
    if isinstance(error, errors.GatedRepoError):
        return UserError(f"Hub {what} {repo} is gated: accept its terms on its Hub page, then {TOKEN_HINT}")
    if isinstance(error, errors.RevisionNotFoundError):
        return UserError(f"Hub {what} {repo} has no revision {revision!r}: pass an existing branch, tag or commit "
                         f"({repo}@main)")
    if isinstance(error, errors.RepositoryNotFoundError):
        return UserError(f"Hub {what} {repo} not found (neither a local path nor a Hub repo; private repos need "
                         f"a token): check the name, or {TOKEN_HINT}")
    if isinstance(error, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)) or _is_offline():
        return UserError(f"Hub {what} {repo}{at} is not in the local cache and the Hub cannot be reached"
                         f"{' (HF_HUB_OFFLINE=1)' if _is_offline() else ''}: download it once online "
                         "(unset HF_HUB_OFFLINE), or pass a local path")
    if isinstance(error, errors.EntryNotFoundError):
        return UserError(f"Hub {what} {repo}{at} lacks a file it needs ({error}): pass a complete repo")
    return UserError(f"Hub {what} {repo}{at} could not be downloaded ({type(error).__name__}: "
                     f"{str(error).splitlines()[0] if str(error) else ''}): check the network, or set "
                     "HF_HUB_OFFLINE=1 to use the local cache")


@dataclass(frozen=True)
class HubSettings:
    """Where the Hub and its cache are, read from the environment when used (not at import)."""

    endpoint: str
    """``HF_ENDPOINT``, default https://huggingface.co."""
    cache_dir: str
    """``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ~/.cache/huggingface/hub."""
    is_offline: bool
    """``HF_HUB_OFFLINE=1``: only the cache is read."""


def hub_settings() -> HubSettings:
    """The Hub settings as the environment says now."""
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return HubSettings(
        endpoint=(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/"),
        cache_dir=os.path.expanduser(os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub")),
        is_offline=_is_offline(),
    )


def _hub_failures() -> tuple[type[BaseException], ...]:
    """What a Hub call raises for a user-fixable reason: HTTP errors (huggingface_hub's own, its HTTP client's),
    missing cache entries, offline mode, invalid ids and disk problems."""
    from huggingface_hub import errors

    http_client_error = getattr(errors, "HTTPError", OSError)  # the HTTP client's base error, as errors imports it
    return (errors.HfHubHTTPError, errors.EntryNotFoundError, errors.OfflineModeIsEnabled, http_client_error,
            OSError, ValueError)


@lru_cache(maxsize=64)
def _download(repo: str, revision: str | None, patterns: tuple[str, ...], settings: HubSettings) -> Path:
    """snapshot_download once per (repo, revision) and process, so every step of a run sees one commit."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=list(patterns),
                                      cache_dir=settings.cache_dir, endpoint=settings.endpoint,
                                      local_files_only=settings.is_offline))
    except _hub_failures() as error:
        raise hub_error("model", repo, revision, error) from error


def resolve_hub_model(path: str) -> HubModel:
    """Download (or find in the cache) the files of Hub model ``org/name[@revision]``."""
    parsed = parse_hub_id(path)
    if parsed is None:
        raise UserError(f"{path} is not a Hub model id: use org/name or org/name@revision")
    repo, revision = parsed
    folder = _download(repo, revision, HUB_MODEL_FILES, hub_settings())
    return HubModel(repo, revision, folder.name, folder)


def hub_file_digests(files: list[Path]) -> dict[Path, str]:
    """The Hub's hash of each snapshot file that is a link to a blob named by a sha256 (LFS files).

    Files that are not such links (small git files, a cache without symlinks) are left out: the
    caller hashes those itself.
    """
    digests = {}
    for file in files:
        if not Path(file).is_symlink():
            continue
        blob = Path(os.readlink(file)).name
        if SHA256_HEX.match(blob):
            digests[file] = f"sha256:{blob}"
    return digests
