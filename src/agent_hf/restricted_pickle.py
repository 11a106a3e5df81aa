"""Reading the tensors of a pickled checkpoint that also holds other objects, without running any of its code.

``torch.load(weights_only=True)`` refuses a file as soon as it meets a class it does not know, such as the yacs
``CfgNode`` that the official classification code stores under ``config``. :func:`load_tensors` reads such a file with
an unpickler that builds tensors (torch's own rebuild functions, storages, dtypes, sizes) and plain containers of
literals (``dict``, ``OrderedDict``, ``list``, ``tuple``, ``set``, numbers, strings), and turns every other class or
function the file names into an inert :class:`UnpickledObject`: calling it, or building it, records the arguments and
state and does nothing else. No module is imported and no code of the file runs; the tensors come out exactly as
``torch.load`` builds them. No call can allocate by argument either: ``range``, ``list``, ``bytes``, ``int`` ... are
placeholders too (``list(range(10**9))`` in a file of a few hundred bytes stays a placeholder), and the only builtins
called (``set``, ``frozenset``, ``complex``, how older protocols store those values) only take what the file holds.

Before anything is read, :func:`check_archive` refuses a zip archive whose entries would decompress to much more
than the file's size (``torch.save`` stores them uncompressed; a zip bomb is the only reason for more).

This module is part of the package, not of the model code shipped to the Hub.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import pickle
import zipfile
from typing import Any

import torch

__all__ = ["CheckpointReadError", "UnpickledObject", "check_archive", "load_checkpoint_file", "load_tensors"]

#: A zip archive may decompress to at most this factor times its size, plus :data:`ARCHIVE_SLACK_BYTES`.
ARCHIVE_EXPANSION = 2
ARCHIVE_SLACK_BYTES = 64 * 2**20


class CheckpointReadError(ValueError):
    """A checkpoint file that cannot be read safely; the message is one line naming the file and the problem."""


logger = logging.getLogger(__name__)


class UnpickledObject:
    """Stands for an object of a class (or the result of a call) that was not loaded.

    Attributes:
        qualified_name: ``"module.name"`` of the class or function named in the file, e.g. ``"yacs.config.CfgNode"``.
        args: the arguments it would have been called with.
        state: the state it would have been given (``__setstate__``), if any.
        items: the ``key: value`` pairs it would have received (a ``dict`` subclass).
        elements: the elements it would have been extended with (a ``list`` subclass).
    """

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> UnpickledObject:
        instance = object.__new__(cls)
        instance.args, instance.state, instance.items, instance.elements = args, None, {}, []
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # nothing runs: __new__ recorded the arguments

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        self.elements.extend(values)

    def __repr__(self) -> str:
        return f"<not loaded: {self.qualified_name}>"


def _placeholder(module: str, name: str) -> type[UnpickledObject]:
    return type(name, (UnpickledObject,), {"qualified_name": f"{module}.{name}", "__module__": __name__})


def _literal_collection(kind: type) -> Any:
    """``set`` / ``frozenset`` of the items the file holds (protocols 0-3 store them as ``set([items])``)."""

    def build(items: Any = ()) -> Any:
        if not isinstance(items, (list, tuple, set, frozenset)):
            raise pickle.UnpicklingError(f"{kind.__name__}() of a {type(items).__name__}: only literal items are read")
        return kind(items)

    return build


def _literal_complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    if not all(isinstance(v, (int, float)) for v in (real, imag)):
        raise pickle.UnpicklingError("complex() of something other than numbers")
    return complex(real, imag)


# Builtins that older pickle protocols call to rebuild literal values; each takes only what the file holds.
_BUILTINS = {"set": _literal_collection(set), "frozenset": _literal_collection(frozenset), "complex": _literal_complex}
_TORCH_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Size"),
    ("torch", "Tensor"),
    ("torch._tensor", "Tensor"),
    ("torch", "device"),
    ("torch.nn.parameter", "Parameter"),
}


def _allowed(module: str, name: str) -> Any | None:
    """The real object for a name the restricted unpickler may build, else ``None``."""
    if module in ("builtins", "__builtin__") and name in _BUILTINS:
        return _BUILTINS[name]
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict
    if (module, name) == ("_codecs", "encode"):  # how protocol 2 stores bytes
        import _codecs

        return _codecs.encode
    if (module, name) in _TORCH_FUNCTIONS:
        target = torch
        for part in module.split(".")[1:] + [name]:
            target = getattr(target, part)
        return target
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replaced: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed(module, name)
        if allowed is not None:
            return allowed
        self.replaced.add(f"{module}.{name}")
        return _placeholder(module, name)


class _RestrictedPickleModule:
    """What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` class and ``load``; one per file, collecting in
    ``replaced`` every name the file asked for that was not loaded (also those only passed as arguments)."""

    UnpicklingError = pickle.UnpicklingError
    __name__ = "agent_hf_restricted_pickle"  # torch.load asks whether it is dill

    def __init__(self) -> None:
        replaced: set[str] = set()
        self.replaced = replaced

        class Unpickler(_RestrictedUnpickler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.replaced = replaced

        self.Unpickler = Unpickler

    def load(self, file: Any, **kwargs: Any) -> Any:
        return self.Unpickler(file, **kwargs).load()


def _collect_placeholders(value: Any, found: set[str], depth: int = 0) -> None:
    if depth > 50:
        return
    if isinstance(value, UnpickledObject):
        found.add(value.qualified_name)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_placeholders(item, found, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _collect_placeholders(item, found, depth + 1)


def check_archive(path: str | os.PathLike) -> None:
    """Refuses a zip archive whose entries would decompress to more than ``ARCHIVE_EXPANSION`` times its size (plus
    ``ARCHIVE_SLACK_BYTES``), from its directory, before anything is decompressed. Other files pass."""
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        return
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointReadError(f"could not read {path}: a damaged zip archive ({error})") from None
    if unpacked > ARCHIVE_EXPANSION * size + ARCHIVE_SLACK_BYTES:
        raise CheckpointReadError(
            f"could not read {path}: its {size} bytes would decompress to {unpacked} bytes (torch.save does not "
            "compress; refusing what looks like a zip bomb)"
        )


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, MemoryError):
        return "it asks for more memory than there is"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_tensors(path: str | os.PathLike | io.IOBase, mmap: bool = False) -> tuple[Any, list[str]]:
    """Reads a ``torch.save`` file keeping only tensors and plain containers.

    Args:
        path: the file (or an open binary file).
        mmap: map the tensors' data instead of reading it (zip archives only; for a look at a large file).

    Returns:
        ``(object, replaced)``: the file's object with :class:`UnpickledObject` in place of anything else, and the
        sorted ``"module.name"`` of the classes and functions that were replaced.

    Raises:
        CheckpointReadError: a zip bomb (see :func:`check_archive`) or a file the unpickler cannot read.
    """
    if isinstance(path, (str, os.PathLike)):
        check_archive(path)
    module = _RestrictedPickleModule()
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False, pickle_module=module, mmap=mmap)
    except CheckpointReadError:
        raise
    except Exception as error:  # any damage in a file from elsewhere
        raise CheckpointReadError(f"could not read {_name(path)}: {_reason(error)}") from error
    replaced = set(module.replaced)
    _collect_placeholders(loaded, replaced)
    return loaded, sorted(replaced)


def _name(path: Any) -> str:
    return os.fspath(path) if isinstance(path, (str, os.PathLike)) else "the checkpoint"


def load_checkpoint_file(path: str | os.PathLike) -> Any:
    """A checkpoint's tensors and plain containers (:func:`load_tensors`); other objects are logged as not loaded.

    The restricted unpickler is used even for files of tensors only: ``torch.load(weights_only=True)`` would call
    ``bytearray(n)`` with any ``n`` the file asks for.

    Raises:
        CheckpointReadError: an empty, damaged or oversized file, in one line naming it.
    """
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise CheckpointReadError(f"could not read {os.fspath(path)}: the file is empty")
    with open(path, "rb") as file:
        start = file.read(1)
    # torch.save writes a zip archive (torch >= 1.6) or a pickle (protocol >= 2 starts with 0x80); anything else (a
    # text file, an image, a download's HTML error page) would fail deep inside the unpickler with a cryptic error.
    if start != b"\x80" and not zipfile.is_zipfile(path):
        raise CheckpointReadError(
            f"could not read {os.fspath(path)}: not a PyTorch checkpoint (neither a zip archive nor a pickle)"
        )
    loaded, replaced = load_tensors(path)
    if replaced:
        logger.warning(
            f"{os.fspath(path)} holds objects other than tensors; they were not loaded (no code of the file ran): "
            + ", ".join(replaced)
        )
    return loaded
