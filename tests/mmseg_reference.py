"""mmsegmentation 0.x's test-time inference, written here from its definitions (``EncoderDecoder.encode_decode``,
``whole_inference``, ``slide_inference``, ``inference`` and ``aug_test``) as the independent reference of
``agent_hf.models.segmentation_inference``; it shares no code with it. Only the model's forward pass is ours.

mmseg, for an image of original size ``ori_shape`` given as resized views ``imgs`` (one per ratio of
``MultiScaleFlipAug``, each also flipped when ``flip``):

* ``encode_decode(img)``: the decode head's logits, bilinearly resized to ``img``'s size;
* ``whole_inference``: ``encode_decode`` of the whole view, resized to ``ori_shape``;
* ``slide_inference``: ``h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1`` rows of windows (same for
  columns); window (i, j) spans ``y1 = i * h_stride``, ``y2 = min(y1 + h_crop, h_img)``, ``y1 = max(y2 - h_crop, 0)``
  (same for x); each window's ``encode_decode`` is added into a zero canvas and 1 into a count map at its place;
  canvas / count, resized to ``ori_shape``;
* ``inference``: the softmax of either over the classes, flipped back horizontally for a flipped view;
* ``aug_test``: the mean of ``inference`` over the views, and its argmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size, align_corners: bool) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


@torch.no_grad()
def encode_decode(model, img: torch.Tensor) -> torch.Tensor:
    return resize(model(pixel_values=img).logits, img.shape[2:], model.config.align_corners)


def whole_inference(model, img: torch.Tensor, ori_shape) -> torch.Tensor:
    return resize(encode_decode(model, img), ori_shape, model.config.align_corners)


def slide_inference(model, img, ori_shape, crop_size, stride, counts_out: list | None = None) -> torch.Tensor:
    """mmseg's ``slide_inference`` (``counts_out``, when given, receives the count map)."""
    (h_stride, w_stride), (h_crop, w_crop) = stride, crop_size
    batch_size, _, h_img, w_img = img.shape
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = img.new_zeros((batch_size, model.config.num_labels, h_img, w_img))
    count_mat = img.new_zeros((batch_size, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            crop_seg_logit = encode_decode(model, img[:, :, y1:y2, x1:x2])
            preds += F.pad(crop_seg_logit, (x1, preds.shape[3] - x2, y1, preds.shape[2] - y2))
            count_mat[:, :, y1:y2, x1:x2] += 1
    assert (count_mat > 0).all()
    if counts_out is not None:
        counts_out.append(count_mat)
    return resize(preds / count_mat, ori_shape, model.config.align_corners)


def inference(model, img, ori_shape, flip: bool, slide: dict | None = None) -> torch.Tensor:
    """mmseg's ``inference`` of one view: ``img`` is the view as fed (already flipped when ``flip``)."""
    if slide is None:
        seg_logit = whole_inference(model, img, ori_shape)
    else:
        seg_logit = slide_inference(model, img, ori_shape, **slide)
    output = F.softmax(seg_logit, dim=1)
    return output.flip(dims=(3,)) if flip else output


def aug_test(model, imgs, ori_shape, flip: bool, slide: dict | None = None) -> torch.Tensor:
    """mmseg's ``aug_test`` over ``MultiScaleFlipAug``'s views: each ratio's image, then (with ``flip``) the same
    image flipped. Returns the averaged probabilities ``(B, C, H, W)``."""
    views = [(img, False) for img in imgs]
    if flip:
        views = [view for img in imgs for view in ((img, False), (img.flip(dims=(3,)), True))]
    seg_logit = inference(model, views[0][0], ori_shape, views[0][1], slide)
    for img, flipped in views[1:]:
        seg_logit += inference(model, img, ori_shape, flipped, slide)
    return seg_logit / len(views)
