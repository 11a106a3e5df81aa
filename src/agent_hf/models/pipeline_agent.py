"""The ``image-segmentation`` pipeline of Agent Attention models: mmsegmentation's inference, one image at a time.

Shipped with every model folder and named in ``config.json``'s ``custom_pipelines``, so that
``pipeline("image-segmentation", model=repo_or_folder, trust_remote_code=True)`` runs it where agent_hf is not
installed. Each image goes through the model's :class:`AgentImageProcessor` preprocessing and
``segmentation_inference.segment``, the very functions of agent_hf's evaluation, so the masks are those of the paper's
evaluation pixel for pixel (``mode="whole"``, the default) or of its sliding-window / multi-scale + flip variants::

    segmenter = pipeline("image-segmentation", model="agent-hf/agent-swin-t-upernet-ade20k", trust_remote_code=True)
    segments = segmenter("photo.jpg")  # [{"label": "wall", "score": None, "mask": <PIL.Image L>}, ...]
    segments = segmenter("photo.jpg", mode="slide")
    segments = segmenter("photo.jpg", ratios=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75], flip=True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.pipelines.image_segmentation import ImageSegmentationPipeline

from .image_ops import ServingLimits, open_served_image, rescale_size, to_rgb_array
from .segmentation_inference import count_forward_passes, scaled_bound, segment

__all__ = ["AGENT_MODEL_TYPES", "AgentImageSegmentationPipeline"]

#: The model types this pipeline is written for (other semantic segmentation models work too, without the check).
AGENT_MODEL_TYPES = ("agent_swin", "agent_pvt")
_SETTINGS = ("mode", "ratios", "flip", "crop_size", "stride")


class AgentImageSegmentationPipeline(ImageSegmentationPipeline):
    """Semantic segmentation with mmseg's test-time inference; one ``{"label", "score", "mask"}`` per class found.

    Call arguments (defaults: the image processor's settings):

    - ``mode``: ``"whole"`` (the paper) or ``"slide"`` (``crop_size`` windows every ``stride`` pixels);
    - ``ratios``: test scales multiplying the processor's ``scale`` (``[1.0]``: single-scale);
    - ``flip``: also predict the mirrored image and average;
    - ``crop_size``, ``stride``: ``(height, width)`` of the sliding windows;
    - ``subtask``: only ``"semantic"`` (or ``None``); ``timeout``: seconds to wait for an image URL.

    Images may be PIL images (any mode, converted like training data), arrays, encoded bytes, base64 strings, and,
    unless the constructor's ``allow_paths``/``allow_urls`` turn them off (the Inference Endpoints handler does), file
    paths and URLs. With ``batch_size > 1`` images are still run one by one, so no result depends on the batch.

    Every call is bounded by ``limits`` (a :class:`ServingLimits`; default: ``ServingLimits.from_env()``, which
    reads ``AGENT_HF_MAX_PIXELS`` and the like): image pixels (from the header, before decoding), encoded bytes,
    images per call, number and range of ``ratios``, forward passes per image, URL time. These are constructor
    arguments only, so that no call (no request) can change them::

        pipeline("image-segmentation", model=..., trust_remote_code=True, allow_paths=False, allow_urls=False,
                 limits=ServingLimits(max_pixels=100_000_000))
    """

    def __init__(
        self, *args, allow_paths: bool = True, allow_urls: bool = True, limits: ServingLimits | None = None, **kwargs
    ) -> None:
        self.allow_paths, self.allow_urls = bool(allow_paths), bool(allow_urls)
        self.limits = ServingLimits.from_env() if limits is None else limits
        super().__init__(*args, **kwargs)

    def __call__(self, inputs=None, **kwargs):
        if "images" in kwargs:  # transformers' older keyword, read as transformers does
            inputs = kwargs.pop("images")
        items = self.limits.check_inputs(inputs)  # a number, an object or an empty list is refused here
        return super().__call__(items if isinstance(inputs, (list, tuple)) else inputs, **kwargs)

    def check_model_type(self, supported_models) -> None:
        # The shared check only knows transformers' own classes and would log "not supported" for remote code.
        if getattr(self.model.config, "model_type", None) in AGENT_MODEL_TYPES:
            return
        super().check_model_type(supported_models)

    def _sanitize_parameters(self, **kwargs):
        unknown = sorted(set(kwargs) - {"subtask", "timeout", *_SETTINGS})
        if unknown:
            raise ValueError(
                f"unknown argument(s) {unknown} for the Agent Attention segmentation pipeline; "
                f"it takes {', '.join(['subtask', 'timeout', *_SETTINGS])}"
            )
        if kwargs.get("subtask") not in (None, "semantic"):
            raise ValueError(f"subtask must be 'semantic' (or None), got {kwargs['subtask']!r}")
        if not hasattr(self.image_processor, "inference_settings"):
            raise TypeError(
                f"{type(self).__name__} needs the model's AgentImageProcessor (preprocessor_config.json), got "
                f"{type(self.image_processor).__name__}; upgrade an old model folder with upgrade_model_folder"
            )
        overrides = {name: kwargs[name] for name in _SETTINGS if kwargs.get(name) is not None}
        validated = self.image_processor.inference_settings(**overrides)  # a bad value fails here, before any work
        self.limits.check_settings(validated)
        forward_params = {name: validated[name] for name in overrides}
        preprocess_params = {"overrides": forward_params} if forward_params else {}
        if kwargs.get("timeout") is not None:
            preprocess_params["timeout"] = kwargs["timeout"]
        return preprocess_params, {name: value for name, value in forward_params.items() if name != "ratios"}, {}

    def preprocess(self, image, overrides=None, timeout=None) -> dict[str, Any]:
        source = open_served_image(
            image, allow_paths=self.allow_paths, allow_urls=self.allow_urls, limits=self.limits, timeout=timeout
        )
        array = to_rgb_array(source)
        settings = self.image_processor.inference_settings(**(overrides or {}))
        height, width = array.shape[:2]
        scale = tuple(self.image_processor.scale)
        sizes = [rescale_size(width, height, scaled_bound(scale, r))[::-1] for r in settings["ratios"]]
        self.limits.check_forward_passes(count_forward_passes(sizes, settings))  # before any resize or forward pass
        views = self.image_processor.multiscale_pixel_values(array, settings["ratios"])
        return {"pixel_values": tuple(views), "original_size": array.shape[:2]}

    def _forward(self, model_inputs, **overrides) -> dict[str, Any]:
        settings = self.image_processor.inference_settings(**overrides)
        settings.pop("ratios")  # used by preprocess
        # Batched inputs (batch_size > 1) arrive as lists; each image runs alone (padding would change results).
        batched = isinstance(model_inputs["original_size"], list)
        views = model_inputs["pixel_values"] if batched else [model_inputs["pixel_values"]]
        sizes = model_inputs["original_size"] if batched else [model_inputs["original_size"]]
        dtype = self.model.dtype
        maps = [
            segment(self.model, [view.to(dtype) for view in image_views], size, **settings)[0]
            for image_views, size in zip(views, sizes)
        ]
        return {"segmentation": maps if batched else maps[0]}

    def postprocess(self, model_outputs) -> list[dict[str, Any]]:
        segmentation = model_outputs["segmentation"]
        segmentation = segmentation.cpu().numpy() if isinstance(segmentation, torch.Tensor) else segmentation
        segmentation = segmentation.reshape(segmentation.shape[-2:])  # unbatched items come as (1, H, W)
        id2label = self.model.config.id2label
        annotation = []
        for class_id in np.unique(segmentation):
            mask = (segmentation == class_id).astype(np.uint8) * 255
            label = id2label.get(int(class_id), id2label.get(str(int(class_id)), str(int(class_id))))
            annotation.append({"score": None, "label": label, "mask": Image.fromarray(mask)})
        return annotation
