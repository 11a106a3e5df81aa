"""agent_hf's test-time inference (whole, slide, multi-scale + flip) against mmseg's, as tests/mmseg_reference.py
writes it from mmseg's definitions: the evaluation script, the image processor and the pipeline all run this code."""

import pytest
import torch
from conftest import tiny_pvt_config, tiny_swin_config
from mmseg_reference import aug_test, slide_inference, whole_inference
from transformers import AutoModelForSemanticSegmentation

from agent_hf.models.segmentation_inference import predict_multiscale, predict_slide, predict_whole, segment

ORIGINAL_SIZE = (70, 101)  # the photo's size before the test resize: every result is brought back to it


@pytest.fixture(scope="module", params=["swin", "pvt"])
def model(request):
    torch.manual_seed(0)
    factory = tiny_swin_config if request.param == "swin" else tiny_pvt_config
    model = AutoModelForSemanticSegmentation.from_config(factory()).eval()
    # Logits that vary across the image, so that window seams, resizes and flips show.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 2.0)
            module.running_mean.normal_(0, 0.5)
    return model


def pixels(height, width, batch=1, seed=0):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_whole_inference_is_mmsegs(model):
    image = pixels(48, 80, batch=2)
    torch.testing.assert_close(
        predict_whole(model, image, ORIGINAL_SIZE), whole_inference(model, image, ORIGINAL_SIZE)
    )


@pytest.mark.parametrize(
    "size,crop_size,stride",
    [((48, 80), (32, 32), (21, 21)), ((64, 96), (32, 48), (16, 40)), ((40, 40), (64, 64), (32, 32))],
    ids=["overlapping", "uneven-steps", "window-larger-than-image"],
)
def test_slide_inference_is_mmsegs(model, size, crop_size, stride):
    image = pixels(*size, batch=2)
    counts = []
    expected = slide_inference(model, image, ORIGINAL_SIZE, crop_size, stride, counts_out=counts)
    if crop_size[0] < size[0]:  # overlapping windows: pixels covered once, twice, four times
        assert len(counts[0].unique()) >= 2
    torch.testing.assert_close(predict_slide(model, image, ORIGINAL_SIZE, crop_size, stride), expected)


@pytest.mark.parametrize("flip", [False, True])
def test_multiscale_flip_is_mmsegs_aug_test(model, flip):
    """Two ratios (one odd-sized), each with its flipped copy: views of different sizes averaged after the resize
    to the original size, flipped views flipped back."""
    views = [pixels(48, 80, seed=1), pixels(35, 43, seed=2)]
    expected = aug_test(model, views, ORIGINAL_SIZE, flip)
    torch.testing.assert_close(predict_multiscale(model, views, ORIGINAL_SIZE, flip=flip), expected)
    assert torch.equal(segment(model, views, ORIGINAL_SIZE, flip=flip), expected.argmax(1))


def test_multiscale_slide_is_mmsegs_aug_test(model):
    views = [pixels(48, 80, seed=3), pixels(36, 60, seed=4)]
    slide = dict(crop_size=(32, 32), stride=(20, 20))
    expected = aug_test(model, views, ORIGINAL_SIZE, flip=True, slide=slide)
    torch.testing.assert_close(
        predict_multiscale(model, views, ORIGINAL_SIZE, flip=True, mode="slide", **slide), expected
    )


def test_single_view_class_map_is_the_argmax_of_mmsegs_logits(model):
    image = pixels(48, 80, seed=5)
    assert torch.equal(segment(model, [image], ORIGINAL_SIZE), whole_inference(model, image, ORIGINAL_SIZE).argmax(1))
    slide = dict(crop_size=(32, 32), stride=(21, 21))
    expected = slide_inference(model, image, ORIGINAL_SIZE, **slide).argmax(1)
    assert torch.equal(segment(model, [image], ORIGINAL_SIZE, mode="slide", **slide), expected)
