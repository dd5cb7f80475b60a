"""Model folders from the Hugging Face Hub: a hub id (``user/name``, ``user/name@revision``)
becomes a local folder through huggingface_hub's cache, then loads like any saved folder.

Only the files of our format are fetched (config.json, model.safetensors, labels.json,
README.md): a repository's pickled weights or Python code are never downloaded, so nothing
fetched can run. The sha256 recorded in config.json is checked on load as for a local folder.
Offline mode (``HF_HUB_OFFLINE=1``) and the cache location (``HF_HOME``, ``HF_HUB_CACHE``) are
huggingface_hub's own settings.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mambadna.errors import ModelFileError
from mambadna.model.save import CARD_FILE, CONFIG_FILE, LABELS_FILE, WEIGHTS_FILE

HUB_FILES = [CONFIG_FILE, WEIGHTS_FILE, LABELS_FILE, CARD_FILE]
"""What is fetched from a hub repository: the saved-folder format, nothing else."""
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def is_hub_id(name: str | os.PathLike) -> bool:
    """True for ``user/name`` (optionally ``@revision``) that is not an existing local path."""
    text = os.fspath(name)
    return (not Path(text).exists() and _HUB_ID.match(text) is not None
            and not text.startswith((".", "/")))


def split_revision(name: str, revision: str | None) -> tuple[str, str | None]:
    """``user/name@rev`` -> (``user/name``, ``rev``); an explicit ``revision`` wins."""
    repo, _, at = name.partition("@")
    return repo, revision or at or None


def model_folder(name_or_path: str | os.PathLike, revision: str | None = None, *,
                 cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                 local_files_only: bool = False, force_download: bool = False) -> Path:
    """A local folder for ``name_or_path``: the path itself, or the hub repository's files in
    the huggingface_hub cache (downloaded unless offline or already there)."""
    if not is_hub_id(name_or_path):
        if revision is not None:
            raise ModelFileError("a revision applies to hub ids (user/name), not to a local "
                                 "folder", path=name_or_path, fix="drop the revision")
        return Path(name_or_path)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = split_revision(os.fspath(name_or_path), revision)
    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES,
                                   cache_dir=cache_dir, token=token, force_download=force_download,
                                   local_files_only=local_files_only)
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise ModelFileError(f"no such model on the Hugging Face Hub ({type(err).__name__})",
                             path=where, fix="check the id and revision (and `hf auth login` "
                                             "for a private model)") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise ModelFileError("not in the local Hugging Face cache, and the hub cannot be "
                             "reached (offline: HF_HUB_OFFLINE is set, or no network)",
                             path=where, fix=f"download it once with network access "
                                             f"(`hf download {repo_id}`), or pass a local "
                                             "folder") from None
    except (HfHubHTTPError, OSError) as err:
        raise ModelFileError(f"cannot download from the Hugging Face Hub ({err})", path=where,
                             fix="retry, or set HF_HUB_OFFLINE=1 to use the cache") from None
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise ModelFileError(f"the hub repository has no {CONFIG_FILE}: not a saved mambadna "
                             "model", path=where,
                             fix="pass the id of a model uploaded with push_to_hub")
    return folder
