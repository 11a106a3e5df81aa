"""Streaming mean-IoU for semantic segmentation, with mmsegmentation's semantics.

:class:`MeanIoU` keeps four per-class pixel-count histograms (intersection,
union, predicted area, label area) and nothing else, so memory is
``O(num_labels)`` however many images are scored. The final numbers are those of
mmseg's ``eval_metrics(metrics=['mIoU'])`` (``total_area_to_metrics``):

* ``IoU[c] = intersect[c] / union[c]`` and ``Acc[c] = intersect[c] / label_area[c]``;
  a 0/0 gives NaN (IoU: class absent from both predictions and labels; Acc: class
  absent from the labels),
* ``mIoU``/``mAcc`` are NaN-ignoring means over classes,
* ``aAcc = sum(intersect) / sum(label_area)``.

The returned keys follow the Hugging Face ``evaluate`` ``mean_iou`` metric:
``mean_iou``, ``mean_accuracy``, ``overall_accuracy``, ``per_category_iou``,
``per_category_accuracy``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["MeanIoU"]

ArrayLike = torch.Tensor | np.ndarray
MapsLike = ArrayLike | Sequence[ArrayLike]

_STATE_KEYS = ("area_intersect", "area_pred_label", "area_label")


def _as_tensor(x: ArrayLike, what: str, device: torch.device | None) -> torch.Tensor:
    tensor = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"{what} must hold integer class ids, got dtype {tensor.dtype}")
    if device is not None:
        tensor = tensor.to(device)
    return tensor.long()


class MeanIoU:
    """Accumulate segmentation IoU statistics over a stream of images.

    Args:
        num_labels: number of classes ``K``; valid ids are ``0..K-1``.
        ignore_index: reference value whose pixels are skipped (predictions there
            are ignored too).
        reduce_labels: apply ADE20K's reduce-zero-label to the *references* first,
            as mmseg does: ``0 -> 255``, ``k -> k - 1``, ``255 -> 255`` (the literal
            value 255, which is then skipped when ``ignore_index == 255``).

    Histograms are ``int64`` tensors living on the device of the first tensor passed
    to :meth:`update` (CPU for numpy input).

    Example::

        metric = MeanIoU(num_labels=150)
        for logits, labels in loader:                  # labels: (N, H, W)
            metric.update(logits.argmax(1), labels)
        metric.sync()                                  # under torch.distributed
        results = metric.compute(id2label)
    """

    def __init__(self, num_labels: int, ignore_index: int = 255, reduce_labels: bool = False):
        if num_labels < 1:
            raise ValueError(f"num_labels must be positive, got {num_labels}")
        self.num_labels = int(num_labels)
        self.ignore_index = int(ignore_index)
        self.reduce_labels = bool(reduce_labels)
        self._device: torch.device | None = None
        self._synced: dict[str, torch.Tensor] | None = None
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Zero all histograms (keeps the device)."""
        device = self._device or torch.device("cpu")
        self._local = {key: torch.zeros(self.num_labels, dtype=torch.int64, device=device) for key in _STATE_KEYS}
        self._synced = None

    def _totals(self) -> dict[str, torch.Tensor]:
        return self._synced if self._synced is not None else self._local

    @property
    def total_area_intersect(self) -> torch.Tensor:
        """``(K,)`` pixels where prediction == reference == class."""
        return self._totals()["area_intersect"]

    @property
    def total_area_pred_label(self) -> torch.Tensor:
        """``(K,)`` pixels predicted as each class (non-ignored pixels only)."""
        return self._totals()["area_pred_label"]

    @property
    def total_area_label(self) -> torch.Tensor:
        """``(K,)`` reference pixels of each class."""
        return self._totals()["area_label"]

    @property
    def total_area_union(self) -> torch.Tensor:
        """``(K,)`` ``pred_area + label_area - intersect``."""
        return self.total_area_pred_label + self.total_area_label - self.total_area_intersect

    # ----------------------------------------------------------------- update
    def update(self, predictions: MapsLike, references: MapsLike) -> None:
        """Add one or more ``(prediction, reference)`` label-map pairs.

        Args:
            predictions: integer class ids, a tensor/array ``(H, W)`` or
                ``(N, H, W)``, or a list of maps (sizes may differ between items).
            references: ground truth of the same structure and shapes.

        Raises:
            ValueError: mismatched shapes or list lengths, or an id outside
                ``[0, num_labels)`` in a non-ignored pixel (reported with the
                offending value).
            TypeError: non-integer inputs.
        """
        if isinstance(predictions, (list, tuple)) or isinstance(references, (list, tuple)):
            if not (isinstance(predictions, (list, tuple)) and isinstance(references, (list, tuple))):
                raise ValueError("predictions and references must both be lists or both arrays")
            if len(predictions) != len(references):
                raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
            for pred, ref in zip(predictions, references, strict=True):
                self._update_one(pred, ref)
        else:
            self._update_one(predictions, references)

    def _update_one(self, prediction: ArrayLike, reference: ArrayLike) -> None:
        if self._device is None:
            self._device = prediction.device if isinstance(prediction, torch.Tensor) else torch.device("cpu")
            self._local = {key: value.to(self._device) for key, value in self._local.items()}
        pred = _as_tensor(prediction, "predictions", self._device)
        ref = _as_tensor(reference, "references", self._device)
        if pred.shape != ref.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} differs from reference shape "
                f"{tuple(ref.shape)} (pass class ids, e.g. logits.argmax(1), at label size)"
            )
        if self.reduce_labels:
            # mmseg: label[label == 0] = 255; label -= 1; label[label == 254] = 255
            ref = torch.where(ref == 0, torch.full_like(ref, 255), ref) - 1
            ref = torch.where(ref == 254, torch.full_like(ref, 255), ref)
        keep = ref != self.ignore_index
        pred, ref = pred[keep], ref[keep]
        self._check_range(ref, "reference")
        self._check_range(pred, "prediction")
        intersect = ref[pred == ref]
        hist = {
            "area_intersect": torch.bincount(intersect, minlength=self.num_labels),
            "area_pred_label": torch.bincount(pred, minlength=self.num_labels),
            "area_label": torch.bincount(ref, minlength=self.num_labels),
        }
        for key, value in hist.items():
            self._local[key] += value
        self._synced = None  # any earlier global totals are now stale

    def _check_range(self, values: torch.Tensor, what: str) -> None:
        if values.numel() == 0:
            return
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= self.num_labels:
            bad = low if low < 0 else high
            ignore = f" or the ignore index {self.ignore_index}" if what == "reference" else ""
            raise ValueError(f"{what} label value {bad} is outside the expected range [0, {self.num_labels}){ignore}")

    # ------------------------------------------------------------ distributed
    def sync(self) -> None:
        """Sum the histograms over all ``torch.distributed`` processes.

        A no-op unless a process group is initialized. The global totals are kept
        next to the local ones, so calling ``sync`` again (or ``update`` then
        ``sync``) never double-counts. Every rank must call it (collective).
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        stacked = torch.stack([self._local[key] for key in _STATE_KEYS])
        # NCCL only reduces CUDA tensors; histograms of numpy inputs live on CPU.
        if dist.get_backend() == "nccl" and stacked.device.type != "cuda":
            reduced = stacked.to(torch.device("cuda", torch.cuda.current_device()))
        else:
            reduced = stacked.clone()
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        reduced = reduced.to(stacked.device)
        self._synced = {key: reduced[i] for i, key in enumerate(_STATE_KEYS)}

    all_reduce = sync

    def merge(self, other: MeanIoU) -> None:
        """Add another accumulator's local histograms into this one."""
        if (other.num_labels, other.ignore_index, other.reduce_labels) != (
            self.num_labels,
            self.ignore_index,
            self.reduce_labels,
        ):
            raise ValueError("cannot merge MeanIoU accumulators with different settings")
        for key in _STATE_KEYS:
            self._local[key] += other._local[key].to(self._local[key].device)
        self._synced = None

    # --------------------------------------------------------- serialization
    def state_dict(self) -> dict[str, Any]:
        """Settings and local histograms (CPU tensors), for checkpoints/merging."""
        state: dict[str, Any] = {
            "num_labels": self.num_labels,
            "ignore_index": self.ignore_index,
            "reduce_labels": self.reduce_labels,
        }
        state.update({key: self._local[key].detach().cpu().clone() for key in _STATE_KEYS})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore histograms saved by :meth:`state_dict` (settings must match)."""
        for setting in ("num_labels", "ignore_index", "reduce_labels"):
            if state[setting] != getattr(self, setting):
                raise ValueError(f"state has {setting}={state[setting]!r}, this metric {getattr(self, setting)!r}")
        device = self._device or torch.device("cpu")
        for key in _STATE_KEYS:
            value = torch.as_tensor(state[key], dtype=torch.int64)
            if value.shape != (self.num_labels,):
                raise ValueError(f"state[{key!r}] has shape {tuple(value.shape)}")
            self._local[key] = value.to(device).clone()
        self._synced = None

    # ---------------------------------------------------------------- compute
    def compute(self, id2label: Mapping[int, str] | None = None) -> dict[str, Any]:
        """Return mmseg's mIoU metrics (synced totals if :meth:`sync` was called).

        Returns:
            ``mean_iou``, ``mean_accuracy``, ``overall_accuracy`` (floats, NaN when
            undefined), ``per_category_iou``, ``per_category_accuracy`` (float64
            arrays ``(K,)`` with NaN for undefined classes) and, if ``id2label`` is
            given, ``per_category``: ``{name: {"iou": float, "accuracy": float}}``.
        """
        intersect = self.total_area_intersect.cpu().double().numpy()
        union = self.total_area_union.cpu().double().numpy()
        label_area = self.total_area_label.cpu().double().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = intersect / union
            acc = intersect / label_area
            overall = intersect.sum() / label_area.sum()
        results: dict[str, Any] = {
            "mean_iou": _nanmean(iou),
            "mean_accuracy": _nanmean(acc),
            "overall_accuracy": float(overall),
            "per_category_iou": iou,
            "per_category_accuracy": acc,
        }
        if id2label is not None:
            results["per_category"] = {
                id2label.get(i, str(i)): {"iou": float(iou[i]), "accuracy": float(acc[i])}
                for i in range(self.num_labels)
            }
        return results


def _nanmean(values: np.ndarray) -> float:
    """Mean over non-NaN entries; NaN (without a warning) when all are NaN."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
