"""The image processor that goes with every agent_hf model, and writing (or upgrading) a complete model folder.

A model folder holds, besides the weights, the config and the model code that ``save_pretrained`` writes:

* ``preprocessor_config.json``: an :class:`AgentImageProcessor` (mmseg's keep-ratio test resize and normalization)
  with ``auto_map["AutoImageProcessor"]``, and its code (``image_processing_agent.py``, ``image_ops.py``,
  ``segmentation_inference.py``);
* ``pipeline_agent.py``, named in ``config.json``'s ``custom_pipelines``, so that ``pipeline("image-segmentation",
  model=folder, trust_remote_code=True)`` runs mmseg's inference (whole, slide, multi-scale + flip);
* ``handler.py`` and ``requirements.txt``: the custom handler of Hugging Face Inference Endpoints.

Folders written by earlier versions (a ``SegformerImageProcessor`` that squashes images to 512x512, no pipeline, no
handler) still load; :func:`upgrade_model_folder` rewrites those files in place.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from transformers.dynamic_module_utils import get_relative_import_files

from .families import FAMILIES
from .models.image_processing_agent import AgentImageProcessor
from .models.image_processing_agent_classification import AgentClassificationImageProcessor
from .models.pipeline_agent import AgentImageSegmentationPipeline
from .models.segmentation_inference import DEFAULT_EVAL_SCALE
from .output_folders import add_files

__all__ = [
    "ENDPOINT_FILES",
    "add_serving_files",
    "classification_serving_files",
    "make_image_processor",
    "save_model_folder",
    "serving_config",
    "serving_files",
    "upgrade_model_folder",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
#: Inference Endpoints' custom handler and its requirements (package data under ``agent_hf/models``).
ENDPOINT_FILES = ("handler.py", "requirements.txt")
_INFERENCE_SETTINGS = ("mode", "ratios", "flip", "crop_size", "stride")


def make_image_processor(
    do_reduce_labels: bool | None = None,
    scale: tuple[int, int] | None = None,
    *,
    source: Any = None,
    model_config: Any = None,
    **settings: Any,
) -> AgentImageProcessor:
    """The agent_hf image processor: mmseg's ADE20K test pipeline (keep-ratio resize to fit ``scale``, normalize).

    Every agent_hf tool builds it here (training, evaluation, the demo, conversion, writing or upgrading a folder).

    Args:
        do_reduce_labels: the model predicts ADE20K's reduced labels (recorded; images are unaffected). Default: the
            source's, else ``True``.
        scale: ``(long_edge, short_edge)`` bound of the keep-ratio resize (the evaluation's test scale). Default: the
            source's, else ``DEFAULT_EVAL_SCALE``.
        source: what the other settings start from: ``None`` (the defaults), an :class:`AgentImageProcessor` (its
            settings), another image processor (e.g. an earlier version's ``SegformerImageProcessor``: its mean, std
            and reduce-labels setting are kept, a warning says its resize is replaced), or such a processor's dict
            (``preprocessor_config.json``).
        model_config: the model's config (object or dict); its ``align_corners`` is used for the logit resizes.
        settings: other :class:`AgentImageProcessor` arguments (``image_mean``, ``image_std``, ``mode``, ``ratios``,
            ``flip``, ``crop_size``, ``stride``, ``align_corners``), overriding the source's.

    Raises:
        TypeError: an unknown setting (e.g. the fixed ``size`` of earlier versions: the resize now keeps the
            aspect ratio, give ``scale``).
    """
    unknown = sorted(set(settings) - set(_SETTING_NAMES))
    if unknown:
        raise TypeError(
            f"make_image_processor got unknown setting(s) {unknown}; expected some of {list(_SETTING_NAMES)} "
            "(images keep their aspect ratio: give the test resize bound as scale=(long_edge, short_edge))"
        )
    values = _source_settings(source)
    if model_config is not None:
        values["align_corners"] = bool(
            model_config.get("align_corners", False)
            if isinstance(model_config, Mapping)
            else getattr(model_config, "align_corners", False)
        )
    given = {"do_reduce_labels": do_reduce_labels, "scale": scale}
    values.update({key: value for key, value in given.items() if value is not None}, **settings)
    return AgentImageProcessor(**values)


_SETTING_NAMES = ("image_mean", "image_std", *_INFERENCE_SETTINGS, "align_corners")


def _is_agent_model(config: Any) -> bool:
    model_type = config.get("model_type") if isinstance(config, Mapping) else getattr(config, "model_type", None)
    return model_type in FAMILIES


_KEPT_KEYS = ("scale", "image_mean", "image_std", "do_reduce_labels", *_INFERENCE_SETTINGS)


def _source_settings(source: Any) -> dict[str, Any]:
    """The :class:`AgentImageProcessor` settings that :func:`make_image_processor` takes from ``source``.

    Another processor type (e.g. an earlier version's ``SegformerImageProcessor``) keeps only its mean, std and
    reduce-labels setting; its resize is replaced by mmseg's keep-ratio test resize, with a warning.
    """
    if source is None:
        return {}
    if isinstance(source, Mapping):
        values = dict(source)
    else:
        values = source.to_dict()
        values["image_processor_type"] = type(source).__name__
    if values.get("image_processor_type") != AgentImageProcessor.__name__:
        logger.warning(
            "Replacing %s by AgentImageProcessor: images keep their aspect ratio (resized to fit %s, as in the "
            "paper's evaluation) instead of being resized to a fixed size; its mean, std and reduce-labels are kept.",
            values.get("image_processor_type", "the image processor"),
            "x".join(map(str, DEFAULT_EVAL_SCALE)),
        )
        values = {
            "image_mean": values.get("image_mean"),
            "image_std": values.get("image_std"),
            "do_reduce_labels": bool(values.get("do_reduce_labels", values.get("reduce_labels", True))),
        }
    return {key: value for key, value in values.items() if key in _KEPT_KEYS and value is not None}


def _module_files(*classes: type) -> list[Path]:
    """The source files of ``classes`` and of every module they import as ``from .x import y``, recursively."""
    files: list[Path] = []
    for cls in classes:
        module_file = sys.modules[cls.__module__].__file__
        for path in [module_file, *get_relative_import_files(module_file)]:
            if Path(path) not in files:
                files.append(Path(path))
    return files


def _template(name: str) -> bytes:
    return (resources.files("agent_hf.models") / name).read_bytes()


def _json_bytes(values: Mapping[str, Any]) -> bytes:
    return (json.dumps(values, indent=2, sort_keys=True) + "\n").encode("utf-8")


def serving_files(config: Mapping[str, Any], image_processor: AgentImageProcessor | None) -> dict[str, bytes]:
    """Everything the serving side of a model folder needs, as ``{file name: content}``.

    Args:
        config: the folder's ``config.json`` as a dict.
        image_processor: the processor to save (``None`` for a model that is not an agent_hf model: then only the
            Endpoints handler and its requirements are written, and ``config.json`` is left as it is).

    Returns:
        ``handler.py`` and ``requirements.txt``; for agent_hf models also ``preprocessor_config.json`` (with
        ``auto_map``), the processor's and the pipeline's code, and ``config.json`` with
        ``auto_map["AutoImageProcessor"]`` and ``custom_pipelines["image-segmentation"]``.
    """
    files = {name: _template(name) for name in ENDPOINT_FILES}
    if image_processor is None:
        return files
    for path in _module_files(AgentImageProcessor, AgentImageSegmentationPipeline):
        files[path.name] = path.read_bytes()
    processor_dict = image_processor.to_dict()
    processor_dict["auto_map"] = {"AutoImageProcessor": _PROCESSOR_REF}
    files[PREPROCESSOR_CONFIG_NAME] = _json_bytes(processor_dict)
    files[CONFIG_NAME] = _json_bytes(serving_config(config))
    return files


_PROCESSOR_REF = f"{AgentImageProcessor.__module__.rsplit('.', 1)[-1]}.{AgentImageProcessor.__name__}"
_PIPELINE_REF = f"{AgentImageSegmentationPipeline.__module__.rsplit('.', 1)[-1]}.AgentImageSegmentationPipeline"


def serving_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """An agent_hf model's ``config.json`` (as a dict) with the serving entries: ``auto_map["AutoImageProcessor"]``
    and ``custom_pipelines["image-segmentation"]`` (every way of writing a model folder writes them)."""
    config = dict(config)
    config["auto_map"] = {**(config.get("auto_map") or {}), "AutoImageProcessor": _PROCESSOR_REF}
    config["custom_pipelines"] = {
        **(config.get("custom_pipelines") or {}),
        "image-segmentation": {
            "impl": _PIPELINE_REF,
            "pt": ["AutoModelForSemanticSegmentation"],
            "tf": [],
            "type": "image",
        },
    }
    return config


def add_serving_files(folder: str | os.PathLike, image_processor=None) -> list[str]:
    """Adds the serving files (:func:`serving_files`, with ``image_processor`` as the folder's processor) to a folder
    that ``save_pretrained`` wrote, e.g. a training checkpoint, so that it can be evaluated and served as it is.

    Returns:
        The names of the files written, sorted.
    """
    folder = Path(folder)
    config = _read_json(folder / CONFIG_NAME)
    processor = make_image_processor(source=image_processor, model_config=config) if _is_agent_model(config) else None
    files = serving_files(config, processor)
    _write_files(folder, files)
    return sorted(files)


def classification_serving_files(config: Mapping[str, Any], image_processor: AgentClassificationImageProcessor):
    """The serving side of an image-classification folder, as ``{file name: content}``: the processor's
    ``preprocessor_config.json`` (with ``auto_map``) and code, ``config.json`` with ``auto_map["AutoImageProcessor"]``
    (transformers' own ``image-classification`` pipeline then runs it), and the Inference Endpoints ``handler.py`` (the
    classification handler) with its ``requirements.txt``."""
    files = {"handler.py": _template("classification_handler.py"), "requirements.txt": _template("requirements.txt")}
    cls = AgentClassificationImageProcessor
    processor_ref = f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"
    for path in _module_files(cls):
        files[path.name] = path.read_bytes()
    processor_dict = image_processor.to_dict()
    processor_dict["auto_map"] = {"AutoImageProcessor": processor_ref}
    files[PREPROCESSOR_CONFIG_NAME] = _json_bytes(processor_dict)
    config = dict(config)
    config["auto_map"] = {**(config.get("auto_map") or {}), "AutoImageProcessor": processor_ref}
    files[CONFIG_NAME] = _json_bytes(config)
    return files


def _write_files(folder: Path, files: Mapping[str, bytes]) -> None:
    """Writes every file of ``files`` into ``folder``: all of them into a staging folder first, then each renamed over
    its destination (atomically, with the umask's permissions, ``config.json`` last since it names the code).
    Nothing else in the folder is touched; if writing fails, nothing is replaced."""
    blocked = [name for name in files if (folder / name).exists() and not (folder / name).is_file()]
    if blocked:
        raise IsADirectoryError(f"{folder}: {', '.join(blocked)} exist(s) but is not a file; nothing was written")
    with add_files(folder) as staging:
        for name, content in files.items():
            (staging / name).write_bytes(content)


def save_model_folder(model, output_dir: str | os.PathLike, image_processor=None, **save_kwargs) -> str:
    """Writes a complete model folder: ``model.save_pretrained`` (weights, config, model code) plus the serving files.

    For agent_hf models the image processor is saved as an :class:`AgentImageProcessor` (built by
    :func:`make_image_processor` from ``image_processor``), with the ``image-segmentation`` pipeline's code
    registered in ``config.json``; every folder gets the Inference Endpoints ``handler.py`` and ``requirements.txt``.
    Another model keeps ``image_processor`` as given (if any).

    An image classifier saved with an :class:`AgentClassificationImageProcessor` gets the classification serving files
    instead (see :func:`classification_serving_files`).

    Args:
        model: the model to save.
        output_dir: the folder (created if needed; existing files of the same names are replaced).
        image_processor: the processor to save with it (default: :func:`make_image_processor`'s).
        save_kwargs: passed to ``model.save_pretrained``.

    Returns:
        ``output_dir`` as a string.
    """
    # Everything is written into a staging folder inside `output_dir` and renamed in only when complete, with the
    # umask's permissions (save_pretrained's temporary files would leave the weights 0600), config.json last.
    with add_files(output_dir) as staging:
        model.save_pretrained(staging, **save_kwargs)
        config = json.loads((staging / CONFIG_NAME).read_text(encoding="utf-8"))
        if isinstance(image_processor, AgentClassificationImageProcessor):
            for name, content in classification_serving_files(config, image_processor).items():
                (staging / name).write_bytes(content)
            return os.fspath(output_dir)
        if _is_agent_model(model.config):
            processor = make_image_processor(source=image_processor, model_config=model.config)
        else:
            processor = None
            if image_processor is not None:
                image_processor.save_pretrained(staging)
        for name, content in serving_files(config, processor).items():
            (staging / name).write_bytes(content)
    return os.fspath(output_dir)


def upgrade_model_folder(folder: str | os.PathLike) -> list[str]:
    """Brings a model folder written by an earlier version up to date, in place.

    Rewrites the image processor (``preprocessor_config.json`` becomes an :class:`AgentImageProcessor` keeping the old
    mean, std and reduce-labels setting, or its own settings if it already is one), its code, the pipeline's code,
    ``handler.py``, ``requirements.txt`` and the ``auto_map`` / ``custom_pipelines`` entries of ``config.json``.
    An image-classification folder (an ``AgentClassificationImageProcessor``) gets its classification serving files
    rewritten instead (see :func:`classification_serving_files`), its processor's settings kept.
    Weights, model code and every other file are left as they are. Each file is replaced atomically, and only after
    all new contents have been written, so a failure leaves the folder as it was.

    Args:
        folder: an agent_hf model folder (``config.json`` of an ``agent_swin`` / ``agent_pvt`` model).

    Returns:
        The names of the files written, sorted.

    Raises:
        FileNotFoundError: ``folder`` or its ``config.json`` does not exist.
        ValueError: ``config.json`` or ``preprocessor_config.json`` is not valid JSON, or the folder is not an
            agent_hf model's.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    config = _read_json(folder / CONFIG_NAME)
    if not _is_agent_model(config):
        raise ValueError(
            f"{folder / CONFIG_NAME} has model_type {config.get('model_type')!r}, not one of {tuple(FAMILIES)}: "
            "not an agent_hf model folder"
        )
    preprocessor = folder / PREPROCESSOR_CONFIG_NAME
    values = _read_json(preprocessor) if preprocessor.exists() else None
    if (values or {}).get("image_processor_type") == AgentClassificationImageProcessor.__name__:
        # An image-classification folder keeps its processor's settings and gets the classification serving files.
        keys = ("size", "do_center_crop", "image_mean", "image_std")
        processor = AgentClassificationImageProcessor(**{key: values[key] for key in keys if key in values})
        files = classification_serving_files(config, processor)
        _write_files(folder, files)
        return sorted(files)
    values = values or {"image_processor_type": AgentImageProcessor.__name__}
    files = serving_files(config, make_image_processor(source=values, model_config=config))
    _write_files(folder, files)
    return sorted(files)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(values).__name__}")
    return values
