"""Image processor for Agent Attention ImageNet classifiers: the official evaluation transform.

Shipped with every classification folder (``auto_map["AutoImageProcessor"]`` in ``preprocessor_config.json``), so
``AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)`` and ``pipeline("image-classification", ...)``
preprocess as the official `agent_transformer/data/build.py` (`build_transform`, not training) does where agent_hf
is not installed. Imports only numpy, PIL, torch, transformers and its siblings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .image_ops import ImageInput, open_image, open_served_images, to_rgb_array

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "AgentClassificationImageProcessor"]

#: timm's `IMAGENET_DEFAULT_MEAN` / `IMAGENET_DEFAULT_STD`, in 0-1 units.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class AgentClassificationImageProcessor(BaseImageProcessor):
    r"""The official ImageNet evaluation transform: square bicubic resize, optional center crop, normalize.

    ``processor(images)`` gives ``pixel_values`` ``(B, 3, size, size)``: each image converted to RGB, then

    - with ``do_center_crop`` (the official ``TEST.CROP``, its default): resized to a *square* of
      ``int(256 / 224 * size)`` pixels (both sides, whatever the aspect ratio) and center-cropped to ``size``
      (the crop's corner rounded as torchvision's ``CenterCrop``);
    - without it (the official 288 and 384 models): resized to a ``size`` square;

    with PIL's bicubic filter (``Image.BICUBIC``, what torchvision's ``Resize`` runs on PIL images), scaled to 0-1 and
    normalized with ``(x - image_mean) / image_std``.

    Args:
        size (`int`, *optional*, defaults to 224): side of the model's input (the official ``DATA.IMG_SIZE``).
        do_center_crop (`bool`, *optional*, defaults to `True`): the official ``TEST.CROP``.
        image_mean (`Sequence[float]`, *optional*, defaults to ImageNet's `(0.485, 0.456, 0.406)`): RGB mean (0-1).
        image_std (`Sequence[float]`, *optional*, defaults to ImageNet's `(0.229, 0.224, 0.225)`): RGB std, 0-1 units.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int = 224,
        do_center_crop: bool = True,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(size, dict):  # transformers' {"height": h, "width": w} form, from a hand-written config
            if size.get("height") != size.get("width"):
                raise ValueError(f"size must be square (the official transform's), got {size}")
            size = size["height"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int (the side of the square input), got {size!r}")
        self.size = size
        self.do_center_crop = bool(do_center_crop)
        self.image_mean = [float(v) for v in (IMAGENET_MEAN if image_mean is None else image_mean)]
        self.image_std = [float(v) for v in (IMAGENET_STD if image_std is None else image_std)]
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError(f"image_mean and image_std need 3 values, std > 0; got {image_mean}, {image_std}")

    @property
    def resize_size(self) -> int:
        """Side of the square resize: ``int(256 / 224 * size)`` with the center crop, else ``size``."""
        return int((256 / 224) * self.size) if self.do_center_crop else self.size

    def transform(self, image: ImageInput, name: str | None = None) -> np.ndarray:
        """One image (PIL image or ``(H, W[, C])`` integer array) -> ``(3, size, size)`` ``float32``."""
        rgb = Image.fromarray(to_rgb_array(image, name))
        side = self.resize_size
        rgb = rgb.resize((side, side), resample=Image.BICUBIC)
        if self.do_center_crop:
            top = int(round((side - self.size) / 2.0))
            rgb = rgb.crop((top, top, top + self.size, top + self.size))
        array = np.asarray(rgb, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    @staticmethod
    def open_image(image) -> ImageInput:
        """An image from any form users send (see `image_ops.open_image`): a PIL image or array, encoded bytes, a
        base64 string or data URL, a file path or an URL."""
        return open_image(image)

    @staticmethod
    def open_served_images(inputs, *, allow_paths: bool | None = None, allow_urls: bool | None = None) -> list:
        """What a server opens from a stranger's request (see `image_ops.open_served_images`): no file path or URL
        unless the owner allows them, pixels, bytes and images per request bounded (the folder's handler.py)."""
        return open_served_images(inputs, allow_paths=allow_paths, allow_urls=allow_urls)

    def preprocess(self, images, return_tensors: str | None = None, **kwargs: Any) -> BatchFeature:
        """Transform a batch of images.

        Args:
            images: one image or a list: PIL images (any mode), ``(H, W[, C])`` integer arrays, encoded image bytes,
                file paths, URLs or base64 strings.
            return_tensors: ``"pt"`` for a torch tensor, ``"np"`` or ``None`` for a numpy array.

        Returns:
            `BatchFeature` with ``pixel_values`` ``(B, 3, size, size)`` ``float32``.
        """
        if kwargs:
            raise TypeError(
                f"{type(self).__name__} got unexpected argument(s) {sorted(kwargs)}; it takes images and "
                "return_tensors (its settings are attributes: size, do_center_crop, image_mean, image_std)"
            )
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise ValueError("images is an empty list")
        pixel_values = np.stack(
            [self.transform(open_image(image), name=f"images[{i}]") for i, image in enumerate(images)]
        )
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)


# `processor.save_pretrained(folder)` also copies this code and writes `auto_map` (as remote-code loading does).
AgentClassificationImageProcessor.register_for_auto_class("AutoImageProcessor")
