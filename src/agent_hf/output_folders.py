"""Writing output folders without losing anything: refuse, stage, swap.

Every script that writes a folder (model conversion, the training run's model folder, the demo's outputs, the
prepared ADE20K dataset) goes through :func:`write_folder`:

1. :func:`check_output_folder` refuses a folder that is not empty unless overwriting was allowed (or the folder is
   recognizably the script's own earlier output), and never lets a folder be written that is the current directory,
   one of its ancestors, holds one of the run's inputs or lies inside one (data, model, checkpoint);
2. everything is written into a staging folder beside the destination (``.{name}.staging-*``, same filesystem);
3. only once it is complete is the staging folder swapped in with two renames; the old folder is removed after the
   swap succeeded (a failed swap puts it back).

Symbolic links are resolved before every check and swap: an output folder that is a link is followed (the link
stays, the folder it points to is the one replaced), never half-replaced. What a killed run leaves beside the
destination (``.{name}.staging-*``, ``.{name}.old-*``) is found by the next write there
(:func:`recover_leftovers`): an ``.old-*`` folder whose destination is missing (killed between the two renames) is put
back, every other leftover is removed, each named in a warning.

Folders and files are created with the process umask (``0777``/``0666`` minus umask), like ``mkdir`` and ``cp``:
nothing is left ``0700``/``0600`` by temporary-file helpers.

:func:`add_files` is the variant for a folder that already holds a run's own files (the training run's checkpoints
and logs): the new files are staged in a hidden sub-folder and renamed into place one by one, ``config.json`` last,
so the folder never holds a half-written file and becomes a loadable model folder only once every file is there.

This module is part of the package, not of the model code shipped to the Hub.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = [
    "OutputFolderError",
    "add_files",
    "apply_umask",
    "check_output_folder",
    "new_staging_folder",
    "recover_leftovers",
    "replace_folder",
    "write_folder",
]


class OutputFolderError(ValueError):
    """An output folder that cannot be written safely.

    Attributes:
        path: the folder.
        reason: ``"not_empty"`` (overwriting was not allowed), ``"not_a_folder"``, ``"current_directory"`` (it is the
            current directory or an ancestor of it), ``"holds_input"`` (it holds one of the run's inputs) or
            ``"inside_input"`` (it lies inside a folder that is one of the run's inputs).
    """

    def __init__(self, path: str | os.PathLike, reason: str, message: str):
        super().__init__(message)
        self.path = Path(path)
        self.reason = reason


logger = logging.getLogger(__name__)


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _is_within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or inside it (both resolved)."""
    return path == folder or folder in path.parents


def _describe_entries(path: Path, limit: int = 5) -> str:
    names = sorted(entry.name for entry in path.iterdir())
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'}: {shown}"


def _real(path: str | os.PathLike) -> Path:
    """``path`` with every symbolic link resolved (also a dangling one: the place the link points to)."""
    return Path(os.path.realpath(path))


def check_output_folder(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    is_own_output: Callable[[Path], bool] | None = None,
) -> None:
    """Raises :class:`OutputFolderError` unless ``path`` may be (re)written.

    Args:
        path: the output folder (it need not exist; a symbolic link is judged by the folder it points to).
        overwrite: allow replacing a folder that is not empty.
        inputs: paths the run reads (files or folders; ``None`` entries and names that are not local paths are
            ignored). A folder that holds one of them, or lies inside one of them, is never written.
        is_own_output: recognizes a folder written earlier by the same script, which may be replaced without
            ``overwrite``.
    """
    folder = Path(path)
    resolved = _real(folder)
    if resolved.is_symlink():  # realpath stops at a loop
        raise OutputFolderError(folder, "not_a_folder", f"output folder {folder} is a loop of symbolic links")
    if resolved.exists() and not resolved.is_dir():
        raise OutputFolderError(folder, "not_a_folder", f"output folder {folder} exists and is not a folder")
    if _is_within(Path.cwd().resolve(), resolved):
        raise OutputFolderError(
            folder,
            "current_directory",
            f"output folder {folder} is the current directory or contains it: it would be replaced as a whole; "
            "choose a new folder",
        )
    for item in inputs:
        if item is None or not os.path.exists(item):
            continue
        real_input = _real(item)
        if real_input != resolved and os.path.isdir(real_input) and _is_within(resolved, real_input):
            raise OutputFolderError(
                folder,
                "inside_input",
                f"output folder {folder} lies inside {os.fspath(item)}, an input of this run: writing there would "
                "mix the output with the input; choose a folder outside it",
            )
        if resolved.is_dir() and _is_within(real_input, resolved):
            raise OutputFolderError(
                folder,
                "holds_input",
                f"output folder {folder} holds this run's input {os.fspath(item)}: it cannot be replaced; choose "
                "another folder",
            )
    if not resolved.is_dir() or not any(resolved.iterdir()):
        return
    if overwrite or (is_own_output is not None and is_own_output(resolved)):
        return
    raise OutputFolderError(
        folder,
        "not_empty",
        f"output folder {folder} is not empty ({_describe_entries(resolved)}); nothing was written",
    )


def _sibling(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}-{secrets.token_hex(4)}"


def recover_leftovers(destination: str | os.PathLike) -> list[Path]:
    """Cleans up after a run that was killed while writing ``destination`` (symbolic links resolved).

    An ``.{name}.old-*`` folder beside a missing ``destination`` (a kill between the two renames of the swap) is
    renamed back to ``destination``; every other ``.{name}.staging-*`` / ``.{name}.old-*`` folder beside it, and
    every ``.staging-*`` folder inside it (left by :func:`add_files`), is removed, except one that holds training
    checkpoints (``checkpoint-*``), which is kept. Each is named in a warning.

    Returns:
        The leftovers found (their former paths).
    """
    found = []
    # Beside the folder a symbolic link points to, and beside the link itself (where earlier versions staged).
    for place in dict.fromkeys([_real(destination), Path(os.path.abspath(destination))]):
        if place.parent.is_dir():
            found += sorted(place.parent.glob(f".{place.name}.old-*")) + sorted(
                place.parent.glob(f".{place.name}.staging-*")
            )
    destination = _real(destination)
    if destination.is_dir():
        found += sorted(entry for entry in destination.glob(".staging-*") if entry.is_dir())
    for leftover in found:
        if leftover.name.startswith(f".{destination.name}.old-") and not os.path.lexists(destination):
            os.rename(leftover, destination)
            logger.warning(f"{destination} was missing after a killed run; restored it from {leftover.name}")
            continue
        if leftover.is_dir() and not leftover.is_symlink():
            checkpoints = sorted(leftover.glob("checkpoint-*"))
            if checkpoints:  # hours of a killed training run: named, not deleted
                logger.warning(
                    f"kept {leftover}, left by a killed training run: it holds {len(checkpoints)} checkpoint(s) "
                    f"(resume from {checkpoints[-1]}, or delete it)"
                )
                continue
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
        logger.warning(f"removed {leftover}, left by a killed run")
    return found


def new_staging_folder(destination: str | os.PathLike, name: str | None = None) -> Path:
    """Creates an empty staging folder beside ``destination`` (``.{name}.staging-*``, or ``name`` when given: the
    processes of a distributed run agree on one) and returns it; the parent folders are created if needed."""
    destination = _real(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / name if name else _sibling(destination, "staging")
    staging.mkdir(mode=0o777, exist_ok=name is not None)  # the umask applies, as for mkdir(1)
    return staging


def apply_umask(root: str | os.PathLike) -> None:
    """Gives every folder and file under ``root`` the permissions the umask asks for (executables keep ``x``):
    helpers that write through temporary files leave them ``0600``/``0700``."""
    mask = _umask()
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o777 & ~mask)
        for name in files:
            file = os.path.join(folder, name)
            if not os.path.islink(file):
                executable = os.stat(file).st_mode & 0o100
                os.chmod(file, (0o777 if executable else 0o666) & ~mask)


def _swap_in(staging: Path, destination: Path) -> None:
    """Renames ``staging`` to ``destination``; an existing ``destination`` is removed only after the swap."""
    if not destination.exists():
        os.rename(staging, destination)
        return
    old = _sibling(destination, "old")
    os.rename(destination, old)
    try:
        os.rename(staging, destination)
    except BaseException:
        os.rename(old, destination)  # put the previous folder back
        raise
    shutil.rmtree(old)


def replace_folder(
    staging: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    is_own_output: Callable[[Path], bool] | None = None,
) -> None:
    """Swaps the complete ``staging`` folder in as ``destination`` (see :func:`write_folder`).

    The checks of :func:`check_output_folder` run again first (the destination may have changed meanwhile); the
    permissions of everything in ``staging`` are set from the umask.
    """
    staging = Path(staging)
    check_output_folder(destination, overwrite=overwrite, inputs=inputs, is_own_output=is_own_output)
    apply_umask(staging)
    _swap_in(staging, _real(destination))


@contextlib.contextmanager
def write_folder(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    is_own_output: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Yields a fresh staging folder beside ``path``; on a normal exit it replaces ``path``.

    The checks of :func:`check_output_folder` run first (same arguments), so nothing is written when they fail. If the
    block raises, the staging folder is removed and ``path`` is left as it was.

    Example::

        with write_folder("out/model", overwrite=args.overwrite, inputs=[args.checkpoint]) as staging:
            model.save_pretrained(staging)
    """
    inputs = list(inputs)
    check_output_folder(path, overwrite=overwrite, inputs=inputs, is_own_output=is_own_output)
    recover_leftovers(path)
    check_output_folder(path, overwrite=overwrite, inputs=inputs, is_own_output=is_own_output)  # a restored folder
    staging = new_staging_folder(path)
    try:
        yield staging
        replace_folder(staging, path, overwrite=overwrite, inputs=inputs, is_own_output=is_own_output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def add_files(path: str | os.PathLike, last: Iterable[str] = ("config.json",)) -> Iterator[Path]:
    """Yields a staging sub-folder of ``path``; on a normal exit its files are renamed into ``path``.

    Each file replaces a file of the same name atomically; the names in ``last`` are moved after all the others, so
    a reader that waits for ``config.json`` finds the complete set. Sub-folders are moved as a whole (an existing
    sub-folder of the same name is replaced after the move). If the block raises, nothing is moved; if a move fails,
    the files already moved are put back as they were (all or nothing).
    """
    folder = _real(path)
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".staging-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o777)
    try:
        yield staging
        apply_umask(staging)
        final = set(last)
        entries = sorted(staging.iterdir(), key=lambda entry: (entry.name in final, entry.name))
        backups = staging / ".previous"
        backups.mkdir()
        done: list[tuple[Path, Path | None]] = []  # (target, its previous content) of every move made
        try:
            for entry in entries:
                target = folder / entry.name
                if entry.is_dir():
                    _swap_in(entry, target)
                    done.append((target, None))
                    continue
                previous = None
                if os.path.lexists(target) and not os.path.isdir(target):
                    previous = backups / entry.name
                    try:  # the old file stays in place meanwhile
                        os.link(target, previous, follow_symlinks=False)
                    except OSError:  # a file system without hard links
                        shutil.copy2(target, previous, follow_symlinks=False)
                os.replace(entry, target)
                done.append((target, previous))
        except BaseException:
            for target, previous in reversed(done):
                if previous is not None:
                    os.replace(previous, target)
                elif not target.is_dir():
                    target.unlink()
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
