"""agent-hf: Agent Attention (Han et al., ECCV 2024) segmentation models for the Hugging Face stack.

Importing the package registers the models with transformers' Auto classes:

    >>> import agent_hf
    >>> from transformers import AutoModelForSemanticSegmentation
    >>> model = AutoModelForSemanticSegmentation.from_config(agent_hf.preset_config("agent-swin-t-upernet-ade20k"))
"""

# The lowest transformers the package supports (its own tests pass there); the Hub-shipped model code alone also
# runs on 4.57. Checked first, so that an older transformers gets this message instead of an ImportError from
# deep inside.
MIN_TRANSFORMERS_VERSION = "5.0.0"


def _check_transformers_version() -> None:
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) < Version(MIN_TRANSFORMERS_VERSION):
        raise ImportError(
            f"agent_hf needs transformers>={MIN_TRANSFORMERS_VERSION}, but transformers {transformers.__version__} "
            f"is installed: pip install -U 'transformers>={MIN_TRANSFORMERS_VERSION}'. (A model folder saved by "
            "agent_hf also loads without agent_hf on transformers 4.57+ with trust_remote_code=True.)"
        )


_check_transformers_version()

from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForSemanticSegmentation  # noqa: E402

from .agent_attention import AgentAttention  # noqa: E402
from .configuration_agent_pvt import AgentPvtConfig  # noqa: E402
from .configuration_agent_swin import AgentSwinConfig  # noqa: E402
from .modeling_agent_pvt import AgentPvtBackbone, AgentPvtForSemanticSegmentation, AgentPvtModel  # noqa: E402
from .modeling_agent_swin import AgentSwinBackbone, AgentSwinForSemanticSegmentation, AgentSwinModel  # noqa: E402
from .official import config_from_official, load_official_checkpoint  # noqa: E402
from .presets import PRESETS, preset_config  # noqa: E402

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

__all__ = [
    "MIN_TRANSFORMERS_VERSION",
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
]
