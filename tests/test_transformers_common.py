"""transformers' own common model tests on the six classes, with the test files of the INSTALLED transformers.

`ModelTesterMixin` (AgentSwin/AgentPvt Model, Backbone, ForSemanticSegmentation), `BackboneTesterMixin` (the two
backbones) and `ConfigTester` (the two configs) come from transformers' `tests/` of the installed release, fetched
from its sdist on PyPI on first use (see `transformers_test_files.py`; cached in `.cache/transformers-tests/`). No
network to PyPI on the first run is a test failure that says so, never a silent skip.

What the mixins cannot know about these models is said here, the way transformers' own model test files say it:
the Auto mappings name the six classes (so that the mixins treat the base models, backbones and segmentation
models as they treat transformers' own), the attention and hidden-state tests check the shapes these models
document (feature maps (B, C_i, H_i, W_i); per block, both agent-attention steps or the windows' weights), and
each test that does not apply to a vision segmentation model is skipped with its reason.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import re
import unittest
from unittest import mock

import pytest
import torch
from conftest import TINY_PVT, TINY_SWIN
from transformers_test_files import (
    TransformersTestsUnavailable,
    load_transformers_tests,
    unavailable_transformers_tests,
)

# The module the classes come from: the agent_hf package, or a package of the Hub-shipped modules alone, which
# tests/compat_check.py names here on transformers 4.57 (where the package cannot be installed).
MODELS_MODULE_ENV = "AGENT_HF_TEST_MODELS_MODULE"
models = importlib.import_module(os.environ.get(MODELS_MODULE_ENV, "agent_hf"))
AgentPvtBackbone = models.AgentPvtBackbone
AgentPvtConfig = models.AgentPvtConfig
AgentPvtForSemanticSegmentation = models.AgentPvtForSemanticSegmentation
AgentPvtModel = models.AgentPvtModel
AgentSwinBackbone = models.AgentSwinBackbone
AgentSwinConfig = models.AgentSwinConfig
AgentSwinForSemanticSegmentation = models.AgentSwinForSemanticSegmentation
AgentSwinModel = models.AgentSwinModel

try:
    transformers_tests = load_transformers_tests()
except TransformersTestsUnavailable as error:
    # Every test here then fails with the reason (never a silent skip); the rest of the suite still runs.
    transformers_tests = unavailable_transformers_tests(f"transformers' common model tests cannot run: {error}")

ModelTesterMixin = transformers_tests.modeling.ModelTesterMixin
BackboneTesterMixin = transformers_tests.backbone.BackboneTesterMixin
ConfigTester = transformers_tests.configuration.ConfigTester

IMAGE_SIZE = 64
NUM_LABELS = 5
# The tiny Agent-Swin with one block per stage where one says as much as two: the mixins' tests load, save, convert
# and compare every parameter many times over, so the time goes with the number of blocks. Its last stage (a "B"
# stage of the default "AAAB") keeps both of its kinds of blocks, a window block and a shifted-window block.
MIXIN_SWIN = {**TINY_SWIN, "depths": [1, 1, 1, 2]}


class AgentModelTester:
    """Tiny configs and inputs (batch of two 64x64 images, 5 classes) of one model family, for the mixins.

    Args:
        parent (`unittest.TestCase`): the test case (the mixins' convention).
        config_class (`type`): `AgentSwinConfig` or `AgentPvtConfig`.
        tiny (`dict`): the family's tiny config arguments (`tests/conftest.py`).
    """

    def __init__(self, parent, config_class, tiny: dict, batch_size: int = 2, is_training: bool = True):
        self.parent = parent
        self.config_class = config_class
        self.tiny = tiny
        self.batch_size = batch_size
        self.image_size = IMAGE_SIZE
        self.num_channels = 3
        self.num_labels = NUM_LABELS
        self.is_training = is_training
        self.num_stages = len(tiny["depths"])
        self.num_blocks = sum(tiny["depths"])

    def get_config(self, **kwargs):
        return self.config_class(**{**self.tiny, "num_labels": self.num_labels, **kwargs})

    # The inputs of the mixins' `floats_tensor` / `ids_tensor` (uniform in [0, 1), uniform class ids), drawn by torch:
    # those helpers draw one Python random number per element, seconds over the ~100 calls of a test class.
    def pixel_values(self) -> torch.Tensor:
        return torch.rand(self.batch_size, self.num_channels, self.image_size, self.image_size)

    def prepare_config_and_inputs(self):
        labels = torch.randint(0, self.num_labels, (self.batch_size, self.image_size, self.image_size))
        return self.get_config(), self.pixel_values(), labels

    def prepare_config_and_inputs_for_common(self):
        return self.get_config(), {"pixel_values": self.pixel_values()}

    def stage_channels(self, config) -> list[int]:
        if hasattr(config, "embed_dims"):
            return list(config.embed_dims)
        return [config.embed_dim * 2**i for i in range(config.num_layers)]

    def stage_sizes(self) -> list[int]:
        return [self.image_size // 4 // 2**i for i in range(self.num_stages)]


@contextlib.contextmanager
def tiny_model_settings():
    """Settings under which the mixins' tests run fast on tiny models (one thread, as everywhere in the tests, see
    conftest.py): short tensor reprs (some mixin tests format every parameter into an assertion message, even when
    the assertion holds)."""
    print_options = torch._tensor_str.get_printoptions()
    torch.set_printoptions(threshold=4, edgeitems=1)
    try:
        yield
    finally:
        torch.set_printoptions(**print_options)


# Why each skipped test of the mixins does not apply to these models (the reason is the skip message). The tests of
# text models (token embeddings, inputs_embeds, language-model losses) skip themselves, through the mixins' own
# checks and `test_resize_embeddings = False`.
NOT_APPLICABLE = {
    # (transformers' own skip message here says "does not support SDPA", which is not the reason: both do.)
    "test_sdpa_can_dispatch_composite_models": "not a composite model (one vision backbone, no language model)",
    "test_num_layers_is_small": (
        "the UperNet / Semantic FPN heads read four stage maps, so the tiny configs keep four stages "
        "(of one or two blocks and 16-64 channels each)"
    ),
}


# test_eager_matches_sdpa_inference_<index>_<dtype>_pad_<side>[_no_attn_mask][_sdpa_kernels]: padding and attention
# masks are for token sequences; these models take no attention_mask, so only the side and mask differ between
# variants that run the same model on the same inputs. One per dtype and kernel choice runs: pad_left_no_attn_mask.
SDPA_VARIANT = re.compile(
    r"test_eager_matches_sdpa_inference_\d+_(?P<dtype>[a-z]+\d+)_pad_(?P<side>left|right)"
    r"(?P<mask>_no_attn_mask)?(?P<kernels>_sdpa_kernels)?$"
)


def skip_reason(test_name: str) -> str | None:
    """Why the mixins' test `test_name` does not apply to these models, or None when it runs."""
    variant = SDPA_VARIANT.match(test_name)
    if variant and (variant["side"], variant["mask"]) != ("left", "_no_attn_mask"):
        same = f"{variant['dtype']}_pad_left_no_attn_mask{variant['kernels'] or ''}"
        return f"no attention_mask input (an image model): this variant would repeat the {same} run"
    return NOT_APPLICABLE.get(test_name)


class AgentTestsBase:
    """What every test class here shares: the fast settings for tiny models, the Auto-mapping names of its family
    (`model_class_names`, for `ModelTesterMixin`) while the class runs, and a failure with the reason on every test
    when transformers' test files cannot be had."""

    model_tester_args: tuple = ()
    model_type = ""
    model_class_names: dict = {}
    has_attentions = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        settings = contextlib.ExitStack()
        cls.addClassCleanup(settings.close)
        settings.enter_context(tiny_model_settings())
        # transformers' mixins find a model's role by the names in its Auto mappings (base model, backbone,
        # segmentation head), as for transformers' own models: name ours there while this class runs.
        from transformers.models.auto import modeling_auto

        for mapping, name in cls.model_class_names.items():
            settings.enter_context(mock.patch.dict(getattr(modeling_auto, mapping), {cls.model_type: name}))

    def setUp(self):
        if transformers_tests.unavailable:
            pytest.fail(transformers_tests.unavailable, pytrace=False)
        reason = skip_reason(self._testMethodName)
        if reason is not None:
            self.skipTest(reason)
        self.model_tester = AgentModelTester(self, *self.model_tester_args)


class AgentCommonTestsMixin(AgentTestsBase):
    """`ModelTesterMixin` on one family's three classes: its attention, hidden-state and embedding tests written
    for feature maps and agent attention, and `ConfigTester` on the family's config."""

    test_resize_embeddings = False
    # transformers 4.x tests head pruning and head masks: these models take no head_mask and prune no heads (neither
    # is part of the official models; transformers 5 dropped both).
    test_pruning = False
    test_head_masking = False
    # transformers runs this test on models of 2023 and later (read from a copyright line): Agent Attention is 2024.
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        super().setUp()
        # The common properties ConfigTester sets (on 4.x, through the constructor as well): hidden_size and
        # num_hidden_layers are derived from the stages and num_attention_heads is per stage (test_config checks that
        # they exist), so these are the constructor arguments every config of transformers' vision models has.
        self.config_tester = ConfigTester(
            self,
            config_class=self.model_tester_args[0],
            has_text_modality=False,
            common_properties=["num_channels", "patch_size"],
            **self.model_tester.tiny,
        )

    def test_config(self):
        self.config_tester.run_common_tests()
        config = self.model_tester.get_config()
        for name in ("hidden_size", "num_attention_heads", "num_hidden_layers"):
            self.assertTrue(hasattr(config, name), msg=f"`{name}` does not exist")

    def test_model_get_set_embeddings(self):
        # transformers' test expects token embeddings (`nn.Embedding`); an image model's input embedding is its patch
        # embedding, which the model must run (`enable_input_require_grads` hooks it), and it has no output embedding.
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        calls = []
        for model_class in self.all_model_classes:
            model = model_class(copy.deepcopy(config)).eval()
            embedding = model.get_input_embeddings()
            self.assertIsInstance(embedding, torch.nn.Conv2d)
            handle = embedding.register_forward_hook(lambda *args, model_class=model_class: calls.append(model_class))
            with torch.no_grad():
                model(**inputs_dict)
            handle.remove()
            self.assertEqual(calls.count(model_class), 1)
            self.assertIsNone(model.get_output_embeddings())

    # ------------------------------------------------------------------ hidden states and attentions
    def check_feature_maps(self, maps, config):
        """The four stage maps (B, C_i, H/4/2**i, W/4/2**i)."""
        tester = self.model_tester
        self.assertEqual(len(maps), tester.num_stages)
        for feature_map, channels, size in zip(maps, tester.stage_channels(config), tester.stage_sizes()):
            self.assertEqual(list(feature_map.shape), [tester.batch_size, channels, size, size])

    def test_hidden_states_output(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            for by_config in (False, True):
                model_config, inputs = copy.deepcopy(config), dict(inputs_dict)
                if by_config:
                    model_config.output_hidden_states = True
                else:
                    inputs["output_hidden_states"] = True
                model = model_class(model_config).eval()
                with torch.no_grad():
                    outputs = model(**self._prepare_for_class(inputs, model_class))
                self.check_feature_maps(outputs.hidden_states, model_config)
                with torch.no_grad():
                    outputs = model(**self._prepare_for_class(inputs_dict, model_class), output_hidden_states=False)
                self.assertIsNone(outputs.hidden_states)

    def check_attentions(self, attentions, config):
        """One entry per block: (agent_to_token (B, h, n, N), token_to_agent (B, h, N, n)) for an agent-attention
        block, the softmax attention's weights (B, ..., h, queries, keys) for the others; rows sum to 1."""
        tester = self.model_tester
        self.assertEqual(len(attentions), tester.num_blocks)
        kinds = self.block_attention_types(config)
        self.assertEqual(len(kinds), tester.num_blocks)
        for weights, (stage, kind) in zip(attentions, kinds):
            heads, tokens = config.num_heads[stage], tester.stage_sizes()[stage] ** 2
            if kind == "A":
                agents = config.downstream_agent_shapes[stage][0] * config.downstream_agent_shapes[stage][1]
                agent_to_token, token_to_agent = weights
                self.assertEqual(list(agent_to_token.shape), [tester.batch_size, heads, agents, tokens])
                self.assertEqual(list(token_to_agent.shape), [tester.batch_size, heads, tokens, agents])
                for step in weights:
                    torch.testing.assert_close(step.sum(-1), torch.ones_like(step.sum(-1)))
            else:
                self.assertEqual(list(weights.shape[-3:-1]), [heads, self.softmax_queries(config, stage)])
                self.assertEqual(weights.shape[0], tester.batch_size)
                torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))

    def block_attention_types(self, config) -> list[tuple[int, str]]:
        """(stage, "A" or "B") of every block, in order."""
        raise NotImplementedError

    def softmax_queries(self, config, stage: int) -> int:
        """Queries per attention map of a softmax-attention ("B") block of `stage`."""
        raise NotImplementedError

    def test_attention_outputs(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            for by_config in (False, True):
                model_config, inputs = copy.deepcopy(config), dict(inputs_dict)
                if by_config:
                    # transformers accepts config.output_attentions only with the "eager" implementation.
                    model_config._attn_implementation = "eager"
                    model_config.output_attentions = True
                else:
                    inputs["output_attentions"] = True
                model = model_class(model_config).eval()
                with torch.no_grad():
                    outputs = model(**self._prepare_for_class(inputs, model_class))
                self.check_attentions(outputs.attentions, model_config)
                # Attentions come last, after the hidden states.
                with torch.no_grad():
                    both = model(**self._prepare_for_class(inputs, model_class), output_hidden_states=True)
                self.assertEqual(len(both), len(outputs) + 1)
                self.assertIs(both[-1], both.attentions)
            with torch.no_grad():
                outputs = model_class(config).eval()(**self._prepare_for_class(inputs_dict, model_class))
            self.assertIsNone(outputs.attentions)

    def test_retain_grad_hidden_states_attentions(self):
        # As transformers' test, except that the gradient flows from every stage map: a stage map is normalized
        # for the output only (the next stage reads the map before that LayerNorm, as in the official code), so
        # the last output alone does not reach the first stage map.
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        config.output_hidden_states = True
        config._attn_implementation = "eager"
        config.output_attentions = True
        model_class = self.all_model_classes[0]
        model = model_class._from_config(config, attn_implementation="eager")
        outputs = model(**self._prepare_for_class(inputs_dict, model_class))
        hidden_states = outputs.hidden_states
        attentions = [
            step for weights in outputs.attentions for step in (weights if isinstance(weights, tuple) else (weights,))
        ]
        for tensor in (*hidden_states, *attentions):
            tensor.retain_grad()
        sum(feature_map.flatten()[0] for feature_map in hidden_states).backward()
        for tensor in (*hidden_states, *attentions):
            self.assertIsNotNone(tensor.grad)


# ------------------------------------------------------------------------------------------------ Agent-Swin
class AgentSwinModelTest(AgentCommonTestsMixin, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (AgentSwinModel, AgentSwinBackbone, AgentSwinForSemanticSegmentation)
    model_tester_args = (AgentSwinConfig, MIXIN_SWIN)
    model_type = "agent_swin"
    model_class_names = {
        "MODEL_MAPPING_NAMES": "AgentSwinModel",
        "MODEL_FOR_BACKBONE_MAPPING_NAMES": "AgentSwinBackbone",
        "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES": "AgentSwinForSemanticSegmentation",
    }

    def block_attention_types(self, config):
        return [(stage, kind) for stage, kinds in enumerate(config.block_attention_types) for kind in kinds]

    def softmax_queries(self, config, stage):
        return config.window_size**2  # (B, num_windows, h, w*w, w*w)


class AgentSwinBackboneTest(AgentTestsBase, BackboneTesterMixin, unittest.TestCase):
    all_model_classes = (AgentSwinBackbone,)
    config_class = AgentSwinConfig
    model_tester_args = (AgentSwinConfig, MIXIN_SWIN)


# ------------------------------------------------------------------------------------------------ Agent-PVT
class AgentPvtModelTest(AgentCommonTestsMixin, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (AgentPvtModel, AgentPvtBackbone, AgentPvtForSemanticSegmentation)
    model_tester_args = (AgentPvtConfig, TINY_PVT)
    model_type = "agent_pvt"
    model_class_names = {
        "MODEL_MAPPING_NAMES": "AgentPvtModel",
        "MODEL_FOR_BACKBONE_MAPPING_NAMES": "AgentPvtBackbone",
        "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES": "AgentPvtForSemanticSegmentation",
    }

    def block_attention_types(self, config):
        return [(stage, config.attn_type[stage]) for stage, depth in enumerate(config.depths) for _ in range(depth)]

    def softmax_queries(self, config, stage):
        return self.model_tester.stage_sizes()[stage] ** 2  # (B, h, H*W, keys of the reduced map)


class AgentPvtBackboneTest(AgentTestsBase, BackboneTesterMixin, unittest.TestCase):
    all_model_classes = (AgentPvtBackbone,)
    config_class = AgentPvtConfig
    model_tester_args = (AgentPvtConfig, TINY_PVT)
