"""Reading the tensors of a pickled checkpoint that also holds other objects, without running any of its code.

``torch.load(weights_only=True)`` refuses a file as soon as it meets a class it does not know, such as the yacs
``CfgNode`` that the official classification code stores under ``config``. :func:`load_tensors` reads such a file with
an unpickler that builds tensors (torch's own rebuild functions, storages, dtypes, sizes) and plain containers
(``dict``, ``OrderedDict``, ``list``, ``tuple``, ``set``, numbers, strings), and turns every other class or function
the file names into an inert :class:`UnpickledObject`: calling it, or building it, records the arguments and
state and does nothing else. No module is imported and no code of the file runs; the tensors come out exactly as
``torch.load`` builds them.

This module is part of the package, not of the model code shipped to the Hub.
"""

from __future__ import annotations

import builtins
import collections
import io
import logging
import os
import pickle
from typing import Any

import torch

__all__ = ["UnpickledObject", "load_checkpoint_file", "load_tensors"]

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


_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes",
             "bytearray", "slice", "range"}  # fmt: skip
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
    if module == "builtins" and name in _BUILTINS:
        return getattr(builtins, name)
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
    """What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` class and ``load``."""

    Unpickler = _RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


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


def load_tensors(path: str | os.PathLike | io.IOBase) -> tuple[Any, list[str]]:
    """Reads a ``torch.save`` file keeping only tensors and plain containers.

    Returns:
        ``(object, replaced)``: the file's object with :class:`UnpickledObject` in place of anything else, and the
        sorted ``"module.name"`` of the classes and functions that were replaced.
    """
    loaded = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)
    replaced: set[str] = set()
    _collect_placeholders(loaded, replaced)
    return loaded, sorted(replaced)


def load_checkpoint_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)``, or :func:`load_tensors` when the file holds other objects (logged)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        loaded, replaced = load_tensors(path)
        logger.warning(
            f"{os.fspath(path)} holds objects other than tensors; they were not loaded (no code of the file ran): "
            + ", ".join(replaced)
        )
        return loaded
