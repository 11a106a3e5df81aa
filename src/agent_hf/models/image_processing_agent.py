"""Image processor for Agent Attention segmentation models: mmsegmentation's ADE20K test pipeline.

Shipped with every model folder (``auto_map["AutoImageProcessor"]`` in ``preprocessor_config.json``), so
``AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)`` gives the paper's preprocessing where agent_hf is
not installed. Unlike the square resize of most segmentation processors, the image keeps its aspect ratio (mmcv
``imrescale`` to fit ``scale=(2048, 512)``, with OpenCV's bilinear sampling) and the logits are brought back to the
original size the way mmseg does (to the resized input, then to the original size, then argmax).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs

from .image_ops import ADE20K_MEAN, ADE20K_STD, ImageInput, open_image, pad_to, prepare_image, rescale_size
from .segmentation_inference import (
    DEFAULT_EVAL_SCALE,
    check_inference_settings,
    multiscale_inputs,
    resize_logits,
    upsampled_argmax,
)

__all__ = ["AgentImageProcessor"]


class AgentImageProcessorKwargs(ImagesKwargs, total=False):
    """The processor's own settings, so that ``from_pretrained(..., scale=...)`` applies them (transformers 5)."""

    scale: Sequence[int]
    do_reduce_labels: bool
    mode: str
    ratios: Sequence[float]
    flip: bool
    stride: Sequence[int]
    align_corners: bool


class AgentImageProcessor(BaseImageProcessor):
    r"""mmseg's test pipeline: keep-ratio resize to fit ``scale``, normalize; mmseg's post-processing.

    ``processor(images)`` gives ``pixel_values`` ``(B, 3, h, w)``: each image converted to RGB like training data
    (grayscale replicated, alpha dropped, 16-bit reduced to its high byte), resized keeping its aspect ratio so that
    its long side is at most ``max(scale)`` and its short side at most ``min(scale)`` (a 500x375 photo becomes
    683x512), normalized as ``(pixel - 255 * image_mean) / (255 * image_std)`` on 0-255 pixels, then padded with
    zeros at the bottom and right to the largest image of the batch.
    :meth:`post_process_semantic_segmentation` undoes this exactly. A batch of one image reproduces mmseg (and
    ``agent_hf``'s evaluation) pixel for pixel; in a padded batch, the padding is part of what the model sees.

    ``mode``, ``ratios``, ``flip``, ``crop_size`` and ``stride`` are the defaults of the ``image-segmentation``
    pipeline shipped with the model (``mode="slide"``: 512x512 windows every 341 pixels; ``ratios=[0.5, 0.75, 1.0,
    1.25, 1.5, 1.75], flip=True``: mmseg's multi-scale + flip test); each can also be given per call.

    Args:
        scale (`Sequence[int]`, *optional*, defaults to `(2048, 512)`):
            ``(long_edge, short_edge)`` bound of the keep-ratio resize (mmseg's ``img_scale``).
        image_mean (`Sequence[float]`, *optional*, defaults to ADE20K's `(0.485, 0.456, 0.406)`):
            RGB mean in 0-1 units (transformers' convention); mmseg's ``img_norm_cfg`` mean divided by 255.
        image_std (`Sequence[float]`, *optional*, defaults to ADE20K's `(0.229, 0.224, 0.225)`):
            RGB standard deviation in 0-1 units.
        do_reduce_labels (`bool`, *optional*, defaults to `True`):
            The model predicts ADE20K's reduced labels (the dataset's 0, "other", is ignored and class k is k - 1).
            Recorded for training scripts; it does not change images.
        mode (`str`, *optional*, defaults to `"whole"`): default inference mode, ``"whole"`` or ``"slide"``.
        ratios (`Sequence[float]`, *optional*, defaults to `(1.0,)`): default test scales (multiplying ``scale``).
        flip (`bool`, *optional*, defaults to `False`): default horizontal-flip test-time augmentation.
        crop_size (`Sequence[int]`, *optional*, defaults to `(512, 512)`): ``(height, width)`` of the sliding windows.
        stride (`Sequence[int]`, *optional*, defaults to `(341, 341)`): ``(height, width)`` step of the windows.
        align_corners (`bool`, *optional*, defaults to `False`): of the bilinear logit resizes (the model config's).
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = AgentImageProcessorKwargs

    def __init__(
        self,
        scale: Sequence[int] = DEFAULT_EVAL_SCALE,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        do_reduce_labels: bool = True,
        mode: str = "whole",
        ratios: Sequence[float] = (1.0,),
        flip: bool = False,
        crop_size: Sequence[int] = (512, 512),
        stride: Sequence[int] = (341, 341),
        align_corners: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        scale = tuple(scale) if isinstance(scale, (list, tuple)) else scale
        if not (isinstance(scale, tuple) and len(scale) == 2 and all(isinstance(s, int) and s >= 1 for s in scale)):
            raise ValueError(f"scale must be a (long_edge, short_edge) pair of positive ints, got {scale!r}")
        self.scale = list(scale)
        self.image_mean = self._channels(image_mean, [m / 255 for m in ADE20K_MEAN], "image_mean")
        self.image_std = self._channels(image_std, [s / 255 for s in ADE20K_STD], "image_std")
        if min(self.image_std) <= 0:
            raise ValueError(f"image_std must be positive, got {self.image_std}")
        self.do_reduce_labels = bool(do_reduce_labels)
        settings = check_inference_settings(mode, ratios, flip, crop_size, stride)
        self.mode = settings["mode"]
        self.ratios = list(settings["ratios"])
        self.flip = settings["flip"]
        self.crop_size = list(settings["crop_size"])
        self.stride = list(settings["stride"])
        self.align_corners = bool(align_corners)

    @staticmethod
    def _channels(values: Sequence[float] | None, default: list[float], name: str) -> list[float]:
        values = default if values is None else [float(v) for v in np.atleast_1d(values)]
        if len(values) != 3:
            raise ValueError(f"{name} must have 3 (RGB) values, got {values}")
        return values

    # ------------------------------------------------------------------------------------------------ settings
    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` in 0-255 units, as mmseg applies them."""
        return tuple(255 * m for m in self.image_mean), tuple(255 * s for s in self.image_std)

    def inference_settings(self, **overrides: Any) -> dict[str, Any]:
        """``mode``, ``ratios``, ``flip``, ``crop_size`` and ``stride``: the processor's, updated with ``overrides``.

        Raises:
            ValueError: an unknown setting or an invalid value.
        """
        settings = {name: getattr(self, name) for name in ("mode", "ratios", "flip", "crop_size", "stride")}
        unknown = sorted(set(overrides) - set(settings))
        if unknown:
            raise ValueError(f"unknown inference setting(s) {unknown}; expected some of {sorted(settings)}")
        settings.update({name: value for name, value in overrides.items() if value is not None})
        return check_inference_settings(**settings)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of an ``height x width`` image after the keep-ratio resize (mmcv ``rescale_size``)."""
        new_width, new_height = rescale_size(int(width), int(height), tuple(self.scale))
        return new_height, new_width

    # ----------------------------------------------------------------------------------------------- preprocess
    def preprocess(
        self,
        images: ImageInput | Sequence[ImageInput],
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Resize (keeping the aspect ratio) and normalize a batch of images, padding them to a common size.

        Args:
            images: one image or a list: PIL images (any mode), ``(H, W[, C])`` integer arrays, encoded image bytes,
                file paths, URLs or base64 strings.
            return_tensors: ``"pt"`` for a torch tensor, ``"np"`` or ``None`` for a numpy array.

        Returns:
            `BatchFeature` with ``pixel_values`` ``(B, 3, h_max, w_max)`` ``float32``.
        """
        if kwargs:
            raise TypeError(
                f"{type(self).__name__} got unexpected argument(s) {sorted(kwargs)}; it takes images and "
                "return_tensors (its settings are attributes: scale, image_mean, image_std, ...)"
            )
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("images is an empty list")
        else:
            images = [images]
        mean, std = self.normalization
        scale = tuple(self.scale)
        arrays = [
            prepare_image(open_image(image), scale, mean, std, name=f"images[{i}]") for i, image in enumerate(images)
        ]
        padded_size = (max(a.shape[1] for a in arrays), max(a.shape[2] for a in arrays))
        pixel_values = np.stack([pad_to(a, None, padded_size, 0, channels_first=True)[0] for a in arrays])
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    def multiscale_pixel_values(self, image: ImageInput, ratios: Sequence[float] | None = None) -> list[torch.Tensor]:
        """One image's normalized inputs, one ``(1, 3, h_i, w_i)`` tensor per ratio (default: ``self.ratios``)."""
        mean, std = self.normalization
        ratios = self.ratios if ratios is None else ratios
        return multiscale_inputs(open_image(image), tuple(self.scale), ratios, mean, std)

    # ---------------------------------------------------------------------------------------------- postprocess
    @staticmethod
    def _sizes(sizes, name: str) -> list[tuple[int, int]]:
        """``sizes`` as ``(height, width)`` pairs of positive ints, else a ValueError naming the bad one."""
        checked = []
        for index, size in enumerate(sizes):
            pair = tuple(size.tolist() if hasattr(size, "tolist") else size) if hasattr(size, "__len__") else ()
            numbers = all(
                isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in pair
            )
            if len(pair) != 2 or not numbers or not all(float(v).is_integer() and v >= 1 for v in pair):
                raise ValueError(f"{name}[{index}] must be a (height, width) pair of positive ints, got {size!r}")
            checked.append((int(pair[0]), int(pair[1])))
        return checked

    def post_process_semantic_segmentation(
        self,
        outputs,
        target_sizes: Sequence[Sequence[int]] | None = None,
        resized_sizes: Sequence[Sequence[int]] | None = None,
    ) -> list[torch.Tensor]:
        """Class maps of the images, as mmseg computes them.

        Each image's logits are resized (bilinearly) to the padded input, cropped to the image's resized size, resized
        to its original size, and the argmax is taken (in slices of classes for large images, same result).

        Args:
            outputs: the model's output (``logits`` ``(B, num_labels, h', w')``).
            target_sizes: ``(height, width)`` of each original image. ``None``: the argmax at the logits' size.
            resized_sizes: ``(height, width)`` of each image after this processor's resize. Default: computed from
                ``target_sizes``, which must then be the images' original sizes; give it to get the class map at
                another size than the original (e.g. smaller, for a huge photo).

        Returns:
            One ``(height, width)`` ``int64`` tensor of class ids per image.
        """
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        if target_sizes is None:
            return list(logits.argmax(dim=1))
        target_sizes = self._sizes(target_sizes, "target_sizes")
        if len(target_sizes) != len(logits):
            raise ValueError(f"got {len(target_sizes)} target_sizes for a batch of {len(logits)} images")
        if resized_sizes is None:
            resized_sizes = [self.resized_size(height, width) for height, width in target_sizes]
        resized_sizes = self._sizes(resized_sizes, "resized_sizes")
        if len(resized_sizes) != len(logits):
            raise ValueError(f"got {len(resized_sizes)} resized_sizes for a batch of {len(logits)} images")
        padded_size = (max(h for h, _ in resized_sizes), max(w for _, w in resized_sizes))
        maps = []
        for index, ((height, width), target) in enumerate(zip(resized_sizes, target_sizes)):
            at_input = resize_logits(logits[index : index + 1], padded_size, self.align_corners)
            at_input = at_input[:, :, :height, :width]
            maps.append(upsampled_argmax(at_input, target, self.align_corners)[0])
        return maps


# `processor.save_pretrained(folder)` also copies this code and writes `auto_map` (as remote-code loading does).
AgentImageProcessor.register_for_auto_class("AutoImageProcessor")
