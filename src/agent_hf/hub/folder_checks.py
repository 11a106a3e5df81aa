"""Model folder checks before publishing (and of the repository id), and what the Hub tools read from a folder
(without torch).

A model folder is what `agent_hf.saving.save_model_folder` (or ``save_pretrained``) writes: ``config.json`` with an
``auto_map``, the model code, the weights, ``preprocessor_config.json`` (with the image processor's code in its own
``auto_map``), and for Inference Endpoints ``handler.py`` + ``requirements.txt``.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Union

from huggingface_hub import constants
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..provenance import combine_tensor_digests

__all__ = [
    "CONFIG_NAME",
    "PREPROCESSOR_CONFIG_NAME",
    "SAFE_WEIGHTS_INDEX_NAME",
    "SAFE_WEIGHTS_NAME",
    "check_repo_id",
    "count_parameters",
    "read_config",
    "validate_model_folder",
    "weights_digest_of_folder",
]

PathLike = Union[str, "os.PathLike[str]"]

CONFIG_NAME = "config.json"
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
HANDLER_NAME = "handler.py"


def check_repo_id(repo_id: str) -> None:
    """Raises a `ValueError` explaining the expected form when `repo_id` is not ``"namespace/name"``."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(
            f"Invalid repo_id {repo_id!r}: expected 'namespace/name' (your username or an organization, then the "
            "model name), e.g. 'your-username/agent-swin-t-upernet-ade20k'."
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"Invalid repo_id {repo_id!r}: {err}") from err


# Not uploaded: the card is pushed separately (last), Trainer checkpoints / optimizer state / logs are not model files.
_IGNORED_DIRS = (
    ".*",  # hidden folders: .git, .cache, and the .staging-* / .old-* folders a killed run may leave behind
    ".git",
    ".cache",
    ".huggingface",
    "__pycache__",
    ".ipynb_checkpoints",
    "runs",
    "checkpoint-*",
    "global_step*",
)
_IGNORED_FILES = (
    "optimizer.pt",
    "optimizer.bin",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*.pth",
    "trainer_state.json",
    "training_args.bin",
    "*.pyc",
    ".DS_Store",
)

# Tensors of the weights that are not parameters: BatchNorm statistics of the heads.
_BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


def _is_ignored(relative: PurePosixPath) -> bool:
    if relative.as_posix() == constants.REPOCARD_NAME:
        return True
    if any(PurePosixPath(part).match(pattern) for part in relative.parts[:-1] for pattern in _IGNORED_DIRS):
        return True
    return any(relative.match(pattern) for pattern in _IGNORED_FILES)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def read_config(folder: PathLike) -> dict[str, Any]:
    """The ``config.json`` of a model folder, as a dict (a clear error when it is missing or not a JSON object)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"Model folder '{folder}' has no {CONFIG_NAME}.")
    config = _load_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path} must contain a JSON object.")
    return config


def _auto_map_modules(auto_map: Any, source: Path) -> set[str]:
    """Module files (``"modeling_x.py"``) referenced by an ``auto_map``; entries in other repos (``repo--mod.Cls``)
    are skipped."""
    if not isinstance(auto_map, dict):
        raise ValueError(f"{source}: `auto_map` must be a mapping of Auto class -> 'module.ClassName'.")
    references: list[str] = []
    for value in auto_map.values():
        references.extend(v for v in (value if isinstance(value, (list, tuple)) else [value]) if v)
    modules = set()
    for reference in references:
        if not isinstance(reference, str) or "." not in reference:
            raise ValueError(f"{source}: invalid `auto_map` entry {reference!r}, expected 'module.ClassName'.")
        if "--" in reference:  # code hosted in another repository
            continue
        module = reference.rsplit(".", 1)[0]
        modules.add(module.replace(".", "/") + ".py")
    return modules


def _custom_pipeline_modules(custom_pipelines: Any, source: Path) -> set[str]:
    """Module files of the pipelines a ``config.json`` declares (``custom_pipelines[task]["impl"]``)."""
    if not custom_pipelines:
        return set()
    if not isinstance(custom_pipelines, dict) or not all(isinstance(v, dict) for v in custom_pipelines.values()):
        raise ValueError(f"{source}: `custom_pipelines` must map a task to {{'impl': 'module.ClassName', ...}}.")
    return _auto_map_modules({task: entry.get("impl") for task, entry in custom_pipelines.items()}, source)


def _read_module(py_file: Path) -> str:
    """The module's text as transformers reads remote code: UTF-8 (with or without a byte-order mark)."""
    try:
        return py_file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{py_file} is not UTF-8 text ({err.reason} at byte {err.start}): transformers reads model code as UTF-8."
        ) from err


def _not_python(py_file: Path, err: Exception) -> ValueError:
    detail = f"{err.msg} (line {err.lineno})" if isinstance(err, SyntaxError) else str(err)
    return ValueError(f"{py_file} is not valid Python: {detail}")


@functools.lru_cache(maxsize=256)
def _parsed(source: str) -> ast.Module:
    """A module's syntax tree, cached by its text: a push checks the folder twice, and the folders a process writes
    share their code files. Read only, never changed."""
    return ast.parse(source)


def _parse_python(py_file: Path) -> ast.Module:
    source = _read_module(py_file)
    try:
        return _parsed(source)
    except (SyntaxError, ValueError) as err:  # ValueError: a null byte (Python < 3.12)
        raise _not_python(py_file, err) from err


def _sibling_imports(tree: ast.Module) -> set[str]:
    """Sibling modules a module imports with ``from .x import y`` (or ``from . import x``): transformers downloads
    them along with the module."""
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                modules.add(node.module.replace(".", "/") + ".py")
            else:  # from . import x
                modules.update(alias.name + ".py" for alias in node.names)
    return modules


def _missing_code_files(folder: Path, modules: set[str]) -> list[str]:
    """Modules of `modules` missing from `folder`, following the relative imports of those that exist."""
    missing: list[str] = []
    to_visit, seen = sorted(modules), set()
    while to_visit:
        module = to_visit.pop()
        if module in seen:
            continue
        seen.add(module)
        if not (folder / module).is_file():
            missing.append(module)
            continue
        to_visit.extend(sorted(_sibling_imports(_parse_python(folder / module)) - seen))
    return sorted(missing)


def _check_handler(handler: Path) -> set[str]:
    """An Inference Endpoints handler must define `EndpointHandler` (the Endpoint fails at start-up otherwise).
    Returns the sibling modules it imports."""
    tree = _parse_python(handler)
    if not any(isinstance(node, ast.ClassDef) and node.name == "EndpointHandler" for node in tree.body):
        raise ValueError(
            f"{handler} defines no `EndpointHandler` class: Inference Endpoints could not start it; nothing was "
            "uploaded. Rewrite the folder with agent_hf (`save_model_folder`) or remove handler.py."
        )
    return _sibling_imports(tree)


def _check_weights_index(folder: Path) -> None:
    index = _load_json(folder / SAFE_WEIGHTS_INDEX_NAME)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{folder / SAFE_WEIGHTS_INDEX_NAME} has no `weight_map`.")
    missing_shards = sorted({shard for shard in weight_map.values() if not (folder / shard).is_file()})
    if missing_shards:
        raise FileNotFoundError(
            f"Model folder '{folder}' is missing weight shard(s) {missing_shards} listed in "
            f"{SAFE_WEIGHTS_INDEX_NAME}; nothing was uploaded."
        )


def validate_model_folder(folder: PathLike) -> list[str]:
    """Checks that ``folder`` is a complete remote-code model folder, without touching the network.

    Required: ``config.json`` with an ``auto_map``, ``preprocessor_config.json``, weights as ``model.safetensors``
    or a sharded ``model.safetensors.index.json`` (with all its shards), and every ``.py`` module named in the
    ``auto_map`` of either config (e.g. ``image_processing_agent.py`` for ``AutoImageProcessor``), plus the sibling
    modules they import with ``from .x import ...``. An Inference Endpoints ``handler.py``, if present, must define
    ``EndpointHandler``, and its relative imports must be present too.

    Args:
        folder: the model folder.

    Returns:
        The files to upload (POSIX paths relative to ``folder``, sorted), ``handler.py`` and ``requirements.txt``
        included. ``README.md``, Trainer checkpoints (``checkpoint-*/``), optimizer/scheduler/RNG state,
        ``training_args.bin``, TensorBoard ``runs/`` and caches are left out.

    Raises:
        FileNotFoundError: the folder or a required file is missing (the message names the folder and every missing
            file).
        ValueError: a file is present but invalid (bad JSON, no ``auto_map``, incomplete shard index, ...).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Model folder '{folder}' does not exist or is not a directory.")

    missing = [name for name in (CONFIG_NAME, PREPROCESSOR_CONFIG_NAME) if not (folder / name).is_file()]
    has_single = (folder / SAFE_WEIGHTS_NAME).is_file()
    has_index = (folder / SAFE_WEIGHTS_INDEX_NAME).is_file()
    if not (has_single or has_index):
        hint = ""
        if any(folder.glob("pytorch_model*.bin")):
            hint = " (found pytorch_model*.bin: re-save with `model.save_pretrained(dir)`, safetensors is the default)"
        missing.append(f"{SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME}{hint}")
    if missing:
        raise FileNotFoundError(
            f"Model folder '{folder}' is incomplete, nothing was uploaded. Missing: {'; '.join(missing)}. "
            "Save the model with `model.save_pretrained(folder)` and the image processor with "
            "`processor.save_pretrained(folder)`."
        )

    config = read_config(folder)
    if not config.get("auto_map"):
        raise ValueError(
            f"{folder / CONFIG_NAME} has no `auto_map`: AutoModelForSemanticSegmentation.from_pretrained(..., "
            "trust_remote_code=True) would not find the model code. Register the classes with "
            "`register_for_auto_class()` before `save_pretrained`."
        )
    modules = _auto_map_modules(config["auto_map"], folder / CONFIG_NAME)
    preprocessor_config = _load_json(folder / PREPROCESSOR_CONFIG_NAME)
    if isinstance(preprocessor_config, dict) and preprocessor_config.get("auto_map"):
        modules |= _auto_map_modules(preprocessor_config["auto_map"], folder / PREPROCESSOR_CONFIG_NAME)
    modules |= _custom_pipeline_modules(config.get("custom_pipelines"), folder / CONFIG_NAME)
    if (folder / HANDLER_NAME).is_file():
        modules |= _check_handler(folder / HANDLER_NAME)
    missing_modules = _missing_code_files(folder, modules)
    if missing_modules:
        raise FileNotFoundError(
            f"Model folder '{folder}' is missing the custom code file(s) {missing_modules} referenced by "
            "`auto_map` of config.json or preprocessor_config.json, or by config.json's `custom_pipelines` (or "
            "imported by that code); nothing was uploaded. "
            "`save_pretrained` copies them when the classes were registered with `register_for_auto_class()`."
        )
    if has_index:
        _check_weights_index(folder)

    files = []
    for path in folder.rglob("*"):
        if path.is_file():
            relative = PurePosixPath(path.relative_to(folder).as_posix())
            if not _is_ignored(relative):
                files.append(relative.as_posix())
    return sorted(files)


# ---------------------------------------------------------------------------------------------------- weights
def _weight_files(folder: Path) -> list[Path]:
    if (folder / SAFE_WEIGHTS_NAME).is_file():
        return [folder / SAFE_WEIGHTS_NAME]
    if (folder / SAFE_WEIGHTS_INDEX_NAME).is_file():
        _check_weights_index(folder)
        index = _load_json(folder / SAFE_WEIGHTS_INDEX_NAME)
        return [folder / shard for shard in sorted(set(index["weight_map"].values()))]
    raise FileNotFoundError(f"Model folder '{folder}' has no {SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME}.")


def _safetensors_header(path: Path, data: bytes | mmap.mmap) -> tuple[dict[str, Any], int]:
    """(tensor entries of the JSON header, offset of the data section) of a ``.safetensors`` file."""
    try:
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(bytes(data[8 : 8 + length]))
    except (struct.error, ValueError) as err:
        raise ValueError(f"{path} is not a valid safetensors file: {err}") from err
    header.pop("__metadata__", None)
    return header, 8 + length


def _tensors(folder: Path, digest: bool = False) -> Iterator[tuple[str, list[int], str | None]]:
    """``(name, shape, SHA-256 of the raw bytes if `digest` else None)`` of every tensor of the folder's weights."""
    for path in _weight_files(folder):
        if path.stat().st_size < 8:
            raise ValueError(f"{path} is not a valid safetensors file (only {path.stat().st_size} bytes).")
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            header, start = _safetensors_header(path, data)
            entries = []
            for name, entry in header.items():
                sha = None
                if digest:
                    begin, end = entry["data_offsets"]
                    with memoryview(data) as view, view[start + begin : start + end] as tensor_bytes:
                        sha = hashlib.sha256(tensor_bytes).hexdigest()
                entries.append((name, entry["shape"], sha))
        yield from entries


def count_parameters(folder: PathLike) -> int:
    """Parameters of the model in a folder, read from its safetensors headers (BatchNorm statistics excluded)."""
    total = 0
    for name, shape, _ in _tensors(Path(folder)):
        if not name.endswith(_BUFFER_SUFFIXES):
            count = 1
            for size in shape:
                count *= size
            total += count
    return total


def weights_digest_of_folder(folder: PathLike) -> str:
    """The digest `agent_hf.provenance.weights_digest` gives for the model these weights were saved from."""
    return combine_tensor_digests(sha for _, _, sha in _tensors(Path(folder), digest=True))
