"""MeanIoU against hand-computed mmseg-style numbers."""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from agent_hf.metrics import MeanIoU

# 3x3 example with one ignored pixel (255), worked out by hand:
#   non-ignored (ref, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,2) (2,0) (0,0)
#   intersect  = [2, 2, 2]      label area = [3, 2, 3]      pred area = [3, 3, 2]
#   union      = [4, 3, 3]      IoU = [1/2, 2/3, 2/3]       Acc = [2/3, 1, 2/3]
#   aAcc = 6/8
REF = np.array([[0, 0, 1], [1, 2, 255], [2, 2, 0]])
PRED = np.array([[0, 1, 1], [1, 2, 0], [2, 0, 0]])


def test_hand_computed_example():
    metric = MeanIoU(num_labels=3)
    metric.update(PRED, REF)
    out = metric.compute()
    np.testing.assert_allclose(out["per_category_iou"], [1 / 2, 2 / 3, 2 / 3])
    np.testing.assert_allclose(out["per_category_accuracy"], [2 / 3, 1, 2 / 3])
    assert out["mean_iou"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    assert out["mean_accuracy"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert out["overall_accuracy"] == pytest.approx(6 / 8)
    assert metric.total_area_intersect.tolist() == [2, 2, 2]
    assert metric.total_area_union.tolist() == [4, 3, 3]
    assert metric.total_area_pred_label.tolist() == [3, 3, 2]
    assert metric.total_area_label.tolist() == [3, 2, 3]


def test_absent_classes_are_nan_and_skipped_in_means():
    # class 1 predicted but absent from the labels: IoU 0, Acc 0/0 = nan
    # class 2 absent from both: IoU nan, Acc nan
    ref = np.array([[0, 0], [3, 3]])
    pred = np.array([[0, 1], [3, 3]])
    metric = MeanIoU(num_labels=4)
    metric.update(pred, ref)
    out = metric.compute()
    iou, acc = out["per_category_iou"], out["per_category_accuracy"]
    assert iou[0] == 0.5 and iou[1] == 0.0 and math.isnan(iou[2]) and iou[3] == 1.0
    assert acc[0] == 0.5 and math.isnan(acc[1]) and math.isnan(acc[2]) and acc[3] == 1.0
    assert out["mean_iou"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert out["mean_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["overall_accuracy"] == pytest.approx(3 / 4)


def test_empty_metric_is_all_nan_without_warnings():
    with np.errstate(all="raise"):
        out = MeanIoU(num_labels=2).compute()
    assert math.isnan(out["mean_iou"]) and math.isnan(out["overall_accuracy"])


def test_reduce_labels_like_mmseg():
    # raw ADE ids: 0 -> ignored, k -> k-1, 255 stays ignored
    raw = np.array([[0, 1], [2, 3], [255, 1]], dtype=np.uint8)
    pred = np.array([[2, 0], [1, 1], [0, 0]])
    # reduced refs: [[255, 0], [1, 2], [255, 0]] -> pairs (0,0) (1,1) (2,1) (0,0)
    # intersect [2,1,0], label [2,1,1], pred [2,2,0], union [2,2,1]
    metric = MeanIoU(num_labels=3, reduce_labels=True)
    metric.update(pred, raw)
    out = metric.compute()
    np.testing.assert_allclose(out["per_category_iou"], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(out["per_category_accuracy"], [1.0, 1.0, 0.0])
    plain = MeanIoU(num_labels=3)
    plain.update(pred, np.array([[255, 0], [1, 2], [255, 0]]))
    np.testing.assert_array_equal(plain.compute()["per_category_iou"], out["per_category_iou"])


def test_batch_list_numpy_and_torch_inputs_agree():
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 5, size=(3, 7, 9))
    refs[refs == 4] = 255
    preds = rng.integers(0, 4, size=(3, 7, 9))
    batched = MeanIoU(num_labels=4)
    batched.update(torch.from_numpy(preds), torch.from_numpy(refs))
    per_image = MeanIoU(num_labels=4)
    for p, r in zip(preds, refs, strict=True):
        per_image.update(p.astype(np.uint8), r.astype(np.uint8))
    listed = MeanIoU(num_labels=4)
    listed.update([preds[0], preds[1, :3, :4]], [refs[0], refs[1, :3, :4]])
    listed.update(list(preds[2:]), list(refs[2:]))
    # independent brute force
    keep = refs != 255
    inter = [np.sum((preds == c) & (refs == c) & keep) for c in range(4)]
    area_pred = [np.sum((preds == c) & keep) for c in range(4)]
    area_label = [np.sum(refs == c) for c in range(4)]
    for m in (batched, per_image):
        assert m.total_area_intersect.tolist() == inter
        assert m.total_area_pred_label.tolist() == area_pred
        assert m.total_area_label.tolist() == area_label
    assert listed.total_area_label.sum() < per_image.total_area_label.sum()  # cropped map


def test_input_validation():
    metric = MeanIoU(num_labels=3)
    with pytest.raises(ValueError, match="shape"):
        metric.update(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match=r"reference label value 5 .*\[0, 3\)"):
        metric.update(np.zeros((1, 2), int), np.array([[1, 5]]))
    with pytest.raises(ValueError, match=r"prediction label value 7 .*\[0, 3\)"):
        metric.update(np.array([[7, 0]]), np.array([[1, 2]]))
    with pytest.raises(ValueError, match="-1"):
        metric.update(np.zeros((1, 2), int), np.array([[-1, 0]]))
    with pytest.raises(ValueError, match="lists"):
        metric.update([np.zeros((2, 2), int)], np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="2 predictions but 1"):
        metric.update([np.zeros((2, 2), int)] * 2, [np.zeros((2, 2), int)])
    with pytest.raises(TypeError, match="integer"):
        metric.update(np.zeros((2, 2), np.float32), np.zeros((2, 2), int))
    # a prediction under an ignored reference pixel is not checked
    metric.update(np.array([[9, 0]]), np.array([[255, 0]]))
    assert metric.total_area_label.tolist() == [1, 0, 0]


def test_merge_and_state_dict_round_trip():
    full, a, b = MeanIoU(3), MeanIoU(3), MeanIoU(3)
    full.update(PRED, REF)
    a.update(PRED[:2], REF[:2])
    b.update(PRED[2:], REF[2:])
    a.merge(b)
    np.testing.assert_array_equal(a.compute()["per_category_iou"], full.compute()["per_category_iou"])
    restored = MeanIoU(3)
    restored.load_state_dict(full.state_dict())
    assert restored.total_area_union.tolist() == [4, 3, 3]
    with pytest.raises(ValueError, match="num_labels"):
        MeanIoU(4).load_state_dict(full.state_dict())
    with pytest.raises(ValueError, match="settings"):
        full.merge(MeanIoU(3, reduce_labels=True))
    full.reset()
    assert full.total_area_label.sum() == 0


def test_per_category_names():
    metric = MeanIoU(3)
    metric.update(PRED, REF)
    out = metric.compute(id2label={0: "wall", 1: "building", 2: "sky"})
    assert out["per_category"]["wall"] == {"iou": 0.5, "accuracy": pytest.approx(2 / 3)}
    assert set(out["per_category"]) == {"wall", "building", "sky"}


def test_sync_is_a_no_op_without_process_group():
    metric = MeanIoU(3)
    metric.update(PRED, REF)
    metric.sync()
    assert metric.total_area_intersect.tolist() == [2, 2, 2]


def _sync_worker(rank: int, world_size: int, init_file: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        metric = MeanIoU(3)
        # rank 0 scores the first row of the example, rank 1 the other two
        rows = slice(0, 1) if rank == 0 else slice(1, 3)
        metric.update(PRED[rows], REF[rows])
        metric.sync()
        metric.all_reduce()  # a second call must not double-count
        results[rank] = metric.total_area_intersect.tolist() + metric.total_area_union.tolist()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not dist.is_available() or "fork" not in mp.get_all_start_methods(),
    reason="needs torch.distributed and the fork start method",
)
def test_sync_sums_across_processes_once():
    with tempfile.TemporaryDirectory() as tmp, mp.get_context("fork").Manager() as manager:
        results = manager.dict()
        # fork: the children reuse the already imported torch (spawn takes ~10 s)
        mp.start_processes(
            _sync_worker,
            args=(2, os.path.join(tmp, "init"), results),
            nprocs=2,
            join=True,
            start_method="fork",
        )
        gathered = dict(results)
    assert gathered[0] == gathered[1] == [2, 2, 2, 4, 3, 3]
