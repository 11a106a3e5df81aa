"""agent-hf: Agent Attention (Han et al., ECCV 2024) segmentation models for the Hugging Face stack.

The first use of any name of the package (``agent_hf.preset_config``, ``from agent_hf import AgentSwinConfig``, ...)
imports the model code and registers the models with transformers' Auto classes:

    >>> import agent_hf
    >>> from transformers import AutoModelForSemanticSegmentation
    >>> model = AutoModelForSemanticSegmentation.from_config(agent_hf.preset_config("agent-swin-t-upernet-ade20k"))

Importing `agent_hf.presets` (hence `agent_hf.training`) registers them too. ``import agent_hf`` alone imports
nothing heavy, so that tools which need no model (`agent_hf.hub`, `agent_hf.registry`, the ``push_to_hub``
script) start without torch; code that loads a saved folder through the Auto classes without touching any name of
the package calls :func:`register_auto_classes` first.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it. Imported on first access (PEP 562).
_LAZY_NAMES = {
    "AgentAttention": "agent_attention",
    "AgentPvtConfig": "configuration_agent_pvt",
    "AgentSwinConfig": "configuration_agent_swin",
    "AgentPvtBackbone": "modeling_agent_pvt",
    "AgentPvtForSemanticSegmentation": "modeling_agent_pvt",
    "AgentPvtModel": "modeling_agent_pvt",
    "AgentSwinBackbone": "modeling_agent_swin",
    "AgentSwinForSemanticSegmentation": "modeling_agent_swin",
    "AgentSwinModel": "modeling_agent_swin",
    "config_from_official": "official",
    "load_official_checkpoint": "official",
    "PRESETS": "presets",
    "preset_config": "presets",
}

# Submodules that need neither torch nor transformers: reaching them does not register the Auto classes.
_LIGHT_SUBMODULES = frozenset({"hub", "provenance", "registry"})

_registered = False


def register_auto_classes() -> None:
    """Registers the Agent-Swin and Agent-PVT classes with `AutoConfig`, `AutoModel`, `AutoBackbone` and
    `AutoModelForSemanticSegmentation` (once; later calls do nothing)."""
    global _registered
    if _registered:
        return
    from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForSemanticSegmentation

    for family in ("swin", "pvt"):
        configuration = importlib.import_module(f"{__name__}.configuration_agent_{family}")
        modeling = importlib.import_module(f"{__name__}.modeling_agent_{family}")
        prefix = "AgentSwin" if family == "swin" else "AgentPvt"
        config_class = getattr(configuration, f"{prefix}Config")
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, getattr(modeling, f"{prefix}Model"), exist_ok=True)
        AutoBackbone.register(config_class, getattr(modeling, f"{prefix}Backbone"), exist_ok=True)
        AutoModelForSemanticSegmentation.register(
            config_class, getattr(modeling, f"{prefix}ForSemanticSegmentation"), exist_ok=True
        )
    _registered = True


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


__all__ = [
    "PRESETS",
    "AgentAttention",
    "AgentPvtBackbone",
    "AgentPvtConfig",
    "AgentPvtForSemanticSegmentation",
    "AgentPvtModel",
    "AgentSwinBackbone",
    "AgentSwinConfig",
    "AgentSwinForSemanticSegmentation",
    "AgentSwinModel",
    "config_from_official",
    "load_official_checkpoint",
    "preset_config",
    "register_auto_classes",
]
