"""agent-hf: Agent Attention (Han et al., ECCV 2024) segmentation models for the Hugging Face stack.

``import agent_hf`` registers the models with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoBackbone`, `AutoModelForSemanticSegmentation`, `AutoModelForImageClassification`):

    >>> import agent_hf
    >>> from transformers import AutoModelForSemanticSegmentation
    >>> model = AutoModelForSemanticSegmentation.from_config(agent_hf.preset_config("agent-swin-t-upernet-ade20k"))

The package's own names (``agent_hf.AgentSwinConfig``, ``agent_hf.preset_config``, ...) are imported on first
access. With ``AGENT_HF_LAZY_IMPORT=1`` in the environment (the ``push_to_hub`` script sets it), ``import agent_hf``
imports nothing heavy and registers on the first use of a package name, so that tools needing no model
(`agent_hf.hub`, `agent_hf.model_zoo`) start without torch.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from typing import Any

# The lowest transformers the package supports (its own tests pass there); the Hub-shipped model code alone also
# runs on 4.57. Checked first (from the installed metadata, without importing transformers), so that an older
# transformers gets this message instead of an ImportError from deep inside.
MIN_TRANSFORMERS_VERSION = "5.0.0"


def _check_transformers_version() -> None:
    from packaging.version import Version

    try:
        installed = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            f"agent_hf needs transformers>={MIN_TRANSFORMERS_VERSION}: "
            f"pip install 'transformers>={MIN_TRANSFORMERS_VERSION}'"
        ) from None
    if Version(installed) < Version(MIN_TRANSFORMERS_VERSION):
        raise ImportError(
            f"agent_hf needs transformers>={MIN_TRANSFORMERS_VERSION}, but transformers {installed} is installed: "
            f"pip install -U 'transformers>={MIN_TRANSFORMERS_VERSION}'. (A model folder saved by agent_hf also loads "
            "without agent_hf on transformers 4.57+ with trust_remote_code=True.)"
        )


_check_transformers_version()

from .families import FAMILIES, MODEL_CLASS_SUFFIXES  # noqa: E402 (after the version check)

__version__ = "0.1.0"

# Public name -> module that defines it. Imported on first access (PEP 562). Each family's config and model classes
# come from its row of the family table (`agent_hf.families`, plain data: importing it costs nothing).
_LAZY_NAMES = {
    "AgentAttention": "models.agent_attention",
    "AgentImageProcessor": "models.image_processing_agent",
    "config_from_official": "official",
    "load_official_checkpoint": "official",
    "load_official_classifier": "official",
    "official_classification_config": "official",
    "IMAGENET_PRESETS": "presets",
    "PRESETS": "presets",
    "preset_config": "presets",
}
for _family in FAMILIES.values():
    _LAZY_NAMES[f"{_family.class_prefix}Config"] = f"models.{_family.configuration_module}"
    for _suffix in MODEL_CLASS_SUFFIXES:
        _LAZY_NAMES[f"{_family.class_prefix}{_suffix}"] = f"models.{_family.modeling_module}"

# Submodules that need neither torch nor transformers: reaching them does not register the Auto classes.
_LIGHT_SUBMODULES = frozenset({"families", "hub", "model_zoo", "provenance"})

_registered = False


def register_auto_classes() -> None:
    """Registers the classes of every model family (`agent_hf.families`) with `AutoConfig`, `AutoModel`,
    `AutoBackbone`, `AutoModelForSemanticSegmentation`, `AutoModelForImageClassification` and `AutoImageProcessor`
    (once; later calls do nothing)."""
    global _registered
    if _registered:
        return
    from transformers import (
        AutoBackbone,
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageClassification,
        AutoModelForSemanticSegmentation,
    )

    image_processor = importlib.import_module(f"{__name__}.models.image_processing_agent").AgentImageProcessor
    auto_classes = {
        "Model": AutoModel,
        "Backbone": AutoBackbone,
        "ForSemanticSegmentation": AutoModelForSemanticSegmentation,
        "ForImageClassification": AutoModelForImageClassification,
    }
    for family in FAMILIES.values():
        config_class = family.config_class()
        AutoConfig.register(family.model_type, config_class, exist_ok=True)
        for suffix, auto_class in auto_classes.items():
            auto_class.register(config_class, family.model_class(suffix), exist_ok=True)
        AutoImageProcessor.register(config_class, slow_image_processor_class=image_processor, exist_ok=True)
    _registered = True


# Tools that never build a model (the push_to_hub CLI) set this before importing agent_hf, so that they start without
# importing torch; they get the registration on first use of a package name instead.
LAZY_IMPORT_ENV = "AGENT_HF_LAZY_IMPORT"

# The scripts (run as `python scripts/NAME.py` or as the console commands of agent_hf.commands: `agent-hf-train`, ...)
# start the same way, so that `--help` and argument errors answer at once; each registers once its arguments are
# checked (agent_hf.argument_checks.check_arguments_early).
_SCRIPT_RUN = bool(sys.argv) and importlib.import_module(f"{__name__}.commands").is_script_run(sys.argv[0])
if os.environ.get(LAZY_IMPORT_ENV, "").strip().lower() not in ("1", "true", "yes") and not _SCRIPT_RUN:
    register_auto_classes()


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        register_auto_classes()
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
        globals()[name] = value
        return value
    if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _LIGHT_SUBMODULES:
        register_auto_classes()
    return importlib.import_module(f"{__name__}.{name}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES})


__all__ = sorted({*_LAZY_NAMES, "MIN_TRANSFORMERS_VERSION", "register_auto_classes"})
