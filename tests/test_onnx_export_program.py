"""`torch.export.export` (the entry to ExecuTorch and to the ONNX exporter) of both families with a dynamic batch,
height and width: one program per family runs at sizes of every kind the model accepts from `MIN_SIDE` (Agent-Swin:
a last-stage map of one 7x7 window per side, of whole windows, of padded ones; Agent-PVT: odd sides) and equals
eager PyTorch within 1e-5 relative. Below `MIN_SIDE` the program refuses the input with its guard."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_pvt_config, tiny_swin_config

import agent_hf
from agent_hf.onnx_export import MIN_SIDE, export_program

FAMILIES = {
    "swin": (tiny_swin_config, agent_hf.AgentSwinForSemanticSegmentation),
    "pvt": (tiny_pvt_config, agent_hf.AgentPvtForSemanticSegmentation),
}
#: Per family, three sizes from one program. Agent-Swin's last stage (1/32 of the side): 96x420 -> 3x14 tokens,
#: one window tall and exactly two wide (both once refused by the program's guards); 64x64 -> 2x2 (the smallest
#: side); 300x400 -> two and two padded windows. Agent-PVT: odd sides and the smallest.
SHAPES = {
    "swin": [(1, 3, 96, 420), (2, 3, MIN_SIDE, MIN_SIDE), (3, 3, 300, 400)],
    "pvt": [(1, 3, 97, 131), (2, 3, MIN_SIDE, 301), (1, 3, 513, 257)],
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def model_and_program(request):
    make_config, model_class = FAMILIES[request.param]
    torch.manual_seed(0)
    model = model_class(make_config()).eval()
    return request.param, model, export_program(model)


def test_program_equals_eager_at_three_sizes(model_and_program):
    family, model, program = model_and_program
    for shape in SHAPES[family]:
        pixel_values = torch.randn(*shape)
        with torch.no_grad():
            expected = model(pixel_values).logits
            actual = program.module()(pixel_values)
        assert actual.shape == expected.shape
        assert ((actual - expected).abs().max() / expected.abs().max()) < 1e-5, shape


def test_program_refuses_sides_below_the_smallest(model_and_program):
    _, _, program = model_and_program
    with pytest.raises(Exception, match=f">= {MIN_SIDE}"):
        program.module()(torch.randn(1, 3, MIN_SIDE - 1, 128))
