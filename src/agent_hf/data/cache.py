"""Where a local dataset folder's Arrow cache lives: under a name derived from its files.

``datasets`` (4 and later) keys the cache of a local folder whose README lists its ``configs`` by that README alone,
not by the files: two prepared folders of the same name (``a/ade20k`` and ``b/ade20k``), or one folder rewritten in
place, would share one cache entry, and the second load would silently return the first one's rows. Loading each
folder with a cache directory named by its files' identity (relative names, sizes, modification times) keeps them
apart.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["local_dataset_cache_dir", "local_folder_fingerprint"]


def local_folder_fingerprint(folder: str | os.PathLike) -> str:
    """A hash of every file under ``folder`` (relative name, size, modification time in ns); files and folders whose
    name starts with a dot (``.git``, ``.cache``) are left out."""
    folder = Path(folder).resolve()
    digest = hashlib.sha256(str(folder).encode())
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            stat = path.stat()
            digest.update(f"\0{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def local_dataset_cache_dir(folder: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """The ``cache_dir`` to pass to ``datasets.load_dataset(folder, ...)``: ``local/<folder name>-<fingerprint>`` under
    ``cache_dir`` (default: ``datasets``' cache, ``HF_DATASETS_CACHE``)."""
    import datasets

    base = Path(cache_dir) if cache_dir is not None else Path(datasets.config.HF_DATASETS_CACHE)
    return str(base / "local" / f"{Path(folder).resolve().name}-{local_folder_fingerprint(folder)}")
