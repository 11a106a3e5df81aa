"""agent-hf: Agent Attention (Han et al., ECCV 2024) segmentation models for the Hugging Face stack.

Importing the package registers the models with transformers' Auto classes:

    >>> import agent_hf
    >>> from transformers import AutoModelForSemanticSegmentation
    >>> model = AutoModelForSemanticSegmentation.from_config(agent_hf.preset_config("agent-swin-t-upernet-ade20k"))
"""

from transformers import AutoBackbone, AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation

from .agent_attention import AgentAttention
from .configuration_agent_pvt import AgentPvtConfig
from .configuration_agent_swin import AgentSwinConfig
from .image_processing_agent import AgentImageProcessor
from .modeling_agent_pvt import AgentPvtBackbone, AgentPvtForSemanticSegmentation, AgentPvtModel
from .modeling_agent_swin import AgentSwinBackbone, AgentSwinForSemanticSegmentation, AgentSwinModel
from .official import config_from_official, load_official_checkpoint
from .presets import PRESETS, preset_config

__version__ = "0.1.0"

_FAMILIES = (
    (AgentSwinConfig, AgentSwinModel, AgentSwinBackbone, AgentSwinForSemanticSegmentation),
    (AgentPvtConfig, AgentPvtModel, AgentPvtBackbone, AgentPvtForSemanticSegmentation),
)
for _config, _model, _backbone, _segmentation in _FAMILIES:
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoBackbone.register(_config, _backbone, exist_ok=True)
    AutoModelForSemanticSegmentation.register(_config, _segmentation, exist_ok=True)
    AutoImageProcessor.register(_config, slow_image_processor_class=AgentImageProcessor, exist_ok=True)

__all__ = [
    "PRESETS",
    "AgentAttention",
    "AgentImageProcessor",
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
]
