"""mmseg's evaluation: every image at its original resolution, streamed into a :class:`~agent_hf.metrics.MeanIoU`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..metrics import MeanIoU
from ..models.segmentation_inference import segment
from .datasets import EvalDataset, StreamingEvalDataset, check_sample_labels

__all__ = ["Evaluation", "evaluate_segmentation", "segmentation_metrics"]


@dataclass
class Evaluation:
    """The result of :func:`evaluate_segmentation`.

    Attributes:
        metric: the accumulated (and, with several processes, summed) confusion counts.
        num_images: images evaluated over all processes.
    """

    metric: MeanIoU
    num_images: int


def _only_item(batch: Sequence[Any]) -> Any:
    return batch[0]


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _broadcast_batchnorm_buffers(model: nn.Module) -> None:
    """Copies process 0's BatchNorm running statistics to every process (mmseg's ``DistEvalHook`` does the same).

    Without SyncBatchNorm each process updates them from its own images after DDP's per-step broadcast, so the
    replicas would otherwise evaluate slightly different models.
    """
    if not _distributed():
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var, module.num_batches_tracked):
                torch.distributed.broadcast(buffer, src=0)


def _sum_over_processes(count: int, device: torch.device) -> int:
    if not _distributed():
        return count
    total = torch.tensor([count], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(total)
    return int(total.item())


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    dataset: EvalDataset | StreamingEvalDataset,
    *,
    process_index: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    progress: bool = False,
) -> Evaluation:
    """Runs the mmseg evaluation of ``model`` on ``dataset``.

    Every image is predicted on its own (no padding, no batching) at the original resolution and its confusion
    counts are added to the metric; no logits are kept. With ``world_size > 1`` the BatchNorm statistics of process
    0 are broadcast first and the counts are summed over processes once at the end (collectives: every process must
    call this). An :class:`EvalDataset` is split here: each process takes every ``world_size``-th image starting at
    ``process_index``; a :class:`StreamingEvalDataset` already holds this process's part of the split.

    Args:
        model: an agent_hf (or any transformers semantic-segmentation) model.
        dataset: the evaluation split.
        process_index: this process's index.
        world_size: number of processes.
        num_workers: dataloader workers.
        progress: show a progress bar.
    """
    settings = dataset.settings
    device = next(model.parameters()).device
    metric = MeanIoU(model.config.num_labels, ignore_index=255)
    if isinstance(dataset, EvalDataset):
        dataset = torch.utils.data.Subset(dataset, range(process_index, len(dataset), world_size))
    elif num_workers:
        num_workers = 0  # the workers would each read the whole stream part
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=num_workers, collate_fn=_only_item)
    if progress:
        loader = tqdm(loader, desc="Evaluating", unit="image")
    if world_size > 1:
        _broadcast_batchnorm_buffers(model)
    was_training = model.training
    model.eval()
    count = 0
    try:
        for sample in loader:
            labels = sample["labels"].to(device)
            inputs = [pixels[None].to(device) for pixels in sample["pixel_values"]]
            check_sample_labels(labels, metric.num_labels, metric.ignore_index, sample["name"])
            prediction = segment(
                model,
                inputs,
                labels.shape,
                flip=settings.flip,
                mode=settings.mode,
                crop_size=settings.crop_size,
                stride=settings.stride,
            )[0]
            metric.update(prediction, labels)
            count += 1
    finally:
        model.train(was_training)
    metric.sync()
    return Evaluation(metric, _sum_over_processes(count, device))


def json_number(value: float) -> float | None:
    """``value`` for JSON: ``None`` for NaN (a class absent from labels and predictions)."""
    return None if math.isnan(value) else float(value)


def segmentation_metrics(
    metric: MeanIoU, id2label: Mapping[int, str], prefix: str = "eval"
) -> tuple[dict[str, float], dict[str, Any]]:
    """mmseg's summary of a (synced) :class:`MeanIoU`, as fractions in [0, 1].

    Returns:
        ``({f"{prefix}_mIoU", f"{prefix}_mAcc", f"{prefix}_aAcc"}, per_class)`` where ``per_class`` maps each class
        name to ``{"iou", "accuracy"}`` (``None`` where undefined: the class is absent from labels and predictions).
    """
    results = metric.compute(id2label)
    summary = {
        f"{prefix}_mIoU": results["mean_iou"],
        f"{prefix}_mAcc": results["mean_accuracy"],
        f"{prefix}_aAcc": results["overall_accuracy"],
    }
    per_class = {
        name: {key: json_number(value) for key, value in values.items()}
        for name, values in results["per_category"].items()
    }
    return summary, per_class
