"""The image processor that goes with every agent_hf model, and saving a complete model folder."""

from __future__ import annotations

import os

from transformers import SegformerImageProcessorPil

# mmseg's ADE20K `img_norm_cfg` (mean 123.675/116.28/103.53, std 58.395/57.12/57.375 on 0-255 pixels),
# expressed on 0-1 pixels as transformers image processors rescale first.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def make_image_processor(
    do_reduce_labels: bool = True, size: int | tuple[int, int] = 512
) -> SegformerImageProcessorPil:
    """A Segformer-style image processor: resize to `size`, rescale to 0-1, normalize with ImageNet statistics.

    `do_reduce_labels=True` applies ADE20K's reduce-zero-label to segmentation maps (0 -> 255, k -> k-1).
    Saved as `preprocessor_config.json` (type `SegformerImageProcessor`), so `AutoImageProcessor` and
    `pipeline("image-segmentation")` load it with transformers alone (PIL backend without torchvision).
    """
    height, width = (size, size) if isinstance(size, int) else size
    return SegformerImageProcessorPil(
        do_resize=True,
        size={"height": height, "width": width},
        do_rescale=True,
        do_normalize=True,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        do_reduce_labels=do_reduce_labels,
    )


def save_model_folder(model, output_dir: str | os.PathLike, image_processor=None, **save_kwargs) -> str:
    """Writes `model` (safetensors, config with `auto_map`, model code) and its image processor to `output_dir`."""
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir, **save_kwargs)
    (image_processor or make_image_processor()).save_pretrained(output_dir)
    return os.fspath(output_dir)


__all__ = ["IMAGE_MEAN", "IMAGE_STD", "make_image_processor", "save_model_folder"]
