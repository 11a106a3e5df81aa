"""What the configurations of both model families share: the transformers-version shims, the classic `__init__`
steps around the family's own attributes, the agent attention settings (their docstrings, values and checks),
and the backbone's out_features.

Shipped to the Hub with the model: imports only transformers and the standard library.
"""

# Import shims: these modules travel to the Hub and run on transformers 4.57 (the last 4.x) through the newest
# 5.x. `BackboneConfigMixin` moved to `transformers.backbone_utils` in 5.x; `PreTrainedConfig` was
# `PretrainedConfig` in 4.x. (transformers' `check_imports` ignores imports inside try blocks.)
import transformers

# The shipped code needs transformers 4.57 or newer (say so, rather than fail on a missing import further down).
if tuple(int(part) for part in transformers.__version__.split(".")[:2]) < (4, 57):
    raise ImportError(
        f"This model's code needs transformers>=4.57, but transformers {transformers.__version__} is installed: "
        "pip install -U transformers"
    )

import inspect
import logging
import os

# Fetching this model's code by repo id, transformers warns "A new version of the following files was downloaded"
# once per module file (about 11 for one repo). This module runs right after the configuration's files were fetched,
# so that warning (and its reminder to check the code) has been shown: the later ones, for files copied next to this
# module (the same repo and revision), are dropped. Other code's warnings are kept. One filter per folder of code.
NEW_CODE_WARNING = "A new version of the following files was downloaded from "


class SameCodeDownloadFilter(logging.Filter):
    """Drops transformers' "new version of the following files" warnings for files that sit next to this module."""

    folder = os.path.dirname(os.path.abspath(__file__))

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if not message.startswith(NEW_CODE_WARNING):
            return True
        files = [line[2:].strip() for line in message.splitlines() if line.startswith("- ")]
        return not files or not all(os.path.isfile(os.path.join(self.folder, name)) for name in files)


_code_logger = logging.getLogger("transformers.dynamic_module_utils")
if not any(getattr(item, "folder", None) == SameCodeDownloadFilter.folder for item in _code_logger.filters):
    _code_logger.addFilter(SameCodeDownloadFilter())

try:
    from transformers.backbone_utils import BackboneConfigMixin

    get_aligned_output_features_output_indices = None
except ImportError:  # older transformers: a module-level function aligns out_features and out_indices
    from transformers.utils.backbone_utils import BackboneConfigMixin, get_aligned_output_features_output_indices
try:
    from transformers.configuration_utils import PreTrainedConfig
except ImportError:  # transformers 4.x
    from transformers.configuration_utils import PretrainedConfig as PreTrainedConfig


def pretrained_config_kwargs(kwargs: dict, derived: tuple[str, ...]) -> dict:
    """The `PreTrainedConfig` keyword arguments of a family config's `__init__`: "sdpa" attention by default, and
    without the derived attributes that `to_dict` writes (and 0.1.0's dataclass configs wrote), which the family
    recomputes.

    Args:
        kwargs (`dict`): the `**kwargs` the family config's `__init__` received.
        derived (`tuple[str, ...]`): the family's derived attribute names (e.g. `"num_layers"`, `"hidden_size"`).
    """
    kwargs = dict(kwargs)
    if not kwargs.get("output_attentions"):  # (attention maps need "eager", which transformers then picks)
        kwargs.setdefault("attn_implementation", "sdpa")
    for name in (*derived, "stage_names", "_out_features", "_out_indices"):
        kwargs.pop(name, None)
    return kwargs


def set_stage_outputs(config, num_stages: int, out_features, out_indices) -> None:
    """Sets `config.stage_names` (`"stem"`, `"stage1"`, ...) and the backbone's aligned out_features/out_indices.

    Args:
        config (`PreTrainedConfig` with `BackboneConfigMixin`): the family config being initialized.
        num_stages (`int`): stages of the backbone.
        out_features (`list[str]`, *optional*): stage names the backbone returns (default: the last stage).
        out_indices (`list[int]`, *optional*): the same as indices into `stage_names`.
    """
    config.stage_names = ["stem"] + [f"stage{i}" for i in range(1, num_stages + 1)]
    out_features = list(out_features) if out_features is not None else None
    out_indices = list(out_indices) if out_indices is not None else None
    if get_aligned_output_features_output_indices is None:
        config.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
    else:
        config._out_features, config._out_indices = get_aligned_output_features_output_indices(
            out_features=out_features, out_indices=out_indices, stage_names=config.stage_names
        )


def check_per_stage_lengths(config, names: tuple[str, ...], num_stages: int) -> None:
    """Raise a `ValueError` naming the config attribute of `names` that does not have one entry per stage."""
    for name in names:
        values = getattr(config, name)
        if len(values) != num_stages:
            raise ValueError(
                f"{type(config).__name__}: {name} has {len(values)} entries but depths has {num_stages} stages "
                f"(depths={config.depths}, {name}={values}); give one entry per stage"
            )


def check_positive_sizes(config, names: tuple[str, ...]) -> None:
    """Raise a `ValueError` naming the config attribute of `names` (a size, or a list of sizes, possibly nested)
    that holds a value below 1; the models would otherwise fail later with a bare arithmetic error."""
    for name in names:
        values = getattr(config, name)
        flat = [values] if isinstance(values, (int, float)) else [v for item in values for v in _as_list(item)]
        if not flat or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 1 for v in flat):
            raise ValueError(f"{type(config).__name__}: {name}={values!r}; every size must be a number >= 1")


def _as_list(item) -> list:
    return list(item) if isinstance(item, (list, tuple)) else [item]


# ------------------------------------------------------------------------------------- agent attention settings
# The agent attention settings of both families' configs: their `Args` entries in the config docstrings (where the
# line `{agent_attention_args}` stands; the defaults are read from the class's `__init__`), their values
# (`set_agent_attention`) and their checks (`check_agent_attention`).
AGENT_ATTENTION_SETTINGS = ("agent_num", "downstream_agent_shapes", "agent_kernel_size", "attention_scale_exponent")
AGENT_ATTENTION_ARGS = """\
        agent_num (`list[int]`, *optional*, defaults to `{agent_num}`):
            Agents per stage at pretraining (a square number: a sqrt x sqrt grid).
        downstream_agent_shapes (`list[list[int]]`, *optional*, defaults to `{downstream_agent_shapes}`):
            Agent grid (h_a, w_a) per stage at segmentation resolution; agents are an adaptive average pool of the
            queries to this grid, and the bias tables are interpolated to it.
        agent_kernel_size (`int`, *optional*, defaults to {agent_kernel_size}):
            Kernel of the depth-wise convolution (DWC) on the values.
        attention_scale_exponent (`float`, *optional*, defaults to {attention_scale_exponent}):
            The agent attention scale is head_dim**attention_scale_exponent."""


def _as_nested_lists(value):
    return [_as_nested_lists(item) for item in value] if isinstance(value, (list, tuple)) else value


def document_agent_attention(config_class: type) -> type:
    """Class decorator: writes the agent attention settings' `Args` entries, with the defaults of
    `config_class.__init__`, where its docstring has the line `{agent_attention_args}`."""
    parameters = inspect.signature(config_class.__init__).parameters
    defaults = {name: _as_nested_lists(parameters[name].default) for name in AGENT_ATTENTION_SETTINGS}
    config_class.__doc__ = config_class.__doc__.replace(
        "        {agent_attention_args}", AGENT_ATTENTION_ARGS.format(**defaults)
    )
    return config_class


def set_agent_attention(config, agent_num, downstream_agent_shapes, agent_kernel_size, attention_scale_exponent):
    """Sets the agent attention settings of a family config being initialized (see `AGENT_ATTENTION_ARGS`)."""
    config.agent_num = [int(n) for n in agent_num]
    config.downstream_agent_shapes = [list(s) for s in downstream_agent_shapes]
    config.agent_kernel_size = agent_kernel_size
    config.attention_scale_exponent = attention_scale_exponent


def check_agent_attention(config, stages) -> None:
    """Raise a `ValueError` for an agent count that is not a square number, or an agent grid that is not
    [height, width] >= 1, in the given (agent attention) stages."""
    for i in stages:
        agents, grid = config.agent_num[i], config.downstream_agent_shapes[i]
        if int(round(agents**0.5)) ** 2 != agents:
            raise ValueError(
                f"{type(config).__name__}: agent_num[{i}]={agents} must be a square number (e.g. 9, 16, 49)"
            )
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(
                f"{type(config).__name__}: downstream_agent_shapes[{i}]={grid} must be [height, width] >= 1"
            )


__all__ = [
    "AGENT_ATTENTION_SETTINGS",
    "BackboneConfigMixin",
    "PreTrainedConfig",
    "check_agent_attention",
    "check_per_stage_lengths",
    "check_positive_sizes",
    "document_agent_attention",
    "pretrained_config_kwargs",
    "set_agent_attention",
    "set_stage_outputs",
]
