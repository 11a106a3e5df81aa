"""Official checkpoints that hold more than tensors: a restricted unpickler builds the tensors and plain containers,
leaves inert placeholders for everything else and never runs code from the file."""

import json
import pickle
import sys
import textwrap

import pytest
import torch
from conftest import REFERENCE_DIR
from official_names import expected_state_dict

import agent_hf
from agent_hf.restricted_pickle import UnpickledObject, load_tensors

IMAGENET_CHECKPOINT = REFERENCE_DIR / "agent_pvt_aaaa_imagenet.pth"


@pytest.fixture
def foreign_module(tmp_path, monkeypatch):
    """A module the checkpoint's classes come from, importable (so an unpickler that imports would run its code); its
    classes leave a trace in ``tmp_path`` when their code runs on loading."""
    source = tmp_path / "src"
    source.mkdir()
    trace = tmp_path / "trace"
    (source / "foreign_config.py").write_text(
        textwrap.dedent(
            f"""
            import os

            TRACE = {str(trace)!r}

            def _ran(what):
                with open(TRACE, "a") as file:
                    file.write(what + "\\n")

            class CfgNode(dict):
                '''Like yacs' CfgNode: a dict subclass with attribute access and state.'''

                def __init__(self, *args, **kwargs):
                    super().__init__(*args, **kwargs)
                    self.__dict__["immutable"] = False

                def __setstate__(self, state):
                    _ran("CfgNode.__setstate__")
                    self.__dict__.update(state)

            class Exploit:
                def __reduce__(self):
                    return (os.system, ("touch " + {str(tmp_path / "pwned")!r},))
            """
        )
    )
    monkeypatch.syspath_prepend(str(source))
    import foreign_config

    yield foreign_config
    sys.modules.pop("foreign_config", None)


def test_a_malicious_pickle_runs_nothing(tmp_path, foreign_module):
    path = tmp_path / "exploit.pth"
    torch.save({"model": {"weight": torch.ones(2, 3)}, "payload": foreign_module.Exploit()}, path)
    assert b"system" in path.read_bytes()
    with pytest.raises(pickle.UnpicklingError):  # torch's safe loader refuses it outright
        torch.load(path, weights_only=True)

    loaded, replaced = load_tensors(path)
    assert not (tmp_path / "pwned").exists(), "os.system ran"
    assert torch.equal(loaded["model"]["weight"], torch.ones(2, 3))
    assert isinstance(loaded["payload"], UnpickledObject) and loaded["payload"].args == (
        f"touch {tmp_path / 'pwned'}",
    )
    assert replaced == ["posix.system"] or replaced == ["nt.system"]


def test_an_official_checkpoint_with_a_config_node_loads(tmp_path, foreign_module):
    """The official classification code saves ``{'model': state_dict, 'config': CfgNode, ...}``."""
    official = torch.load(IMAGENET_CHECKPOINT, weights_only=True)
    config = foreign_module.CfgNode(MODEL=foreign_module.CfgNode(TYPE="agent_pvt", DROP_PATH_RATE=0.1))
    path = tmp_path / "agent_pvt_t_max_acc.pth"
    torch.save({**official, "config": config, "max_accuracy": 79.4, "epoch": 299}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)

    loaded, replaced = load_tensors(path)
    assert replaced == ["foreign_config.CfgNode"]
    assert not (tmp_path / "trace").exists(), "code of the checkpoint's classes ran"
    node = loaded["config"]
    assert isinstance(node, UnpickledObject) and node.qualified_name == "foreign_config.CfgNode"
    assert node.items["MODEL"].items == {"TYPE": "agent_pvt", "DROP_PATH_RATE": 0.1}
    assert (loaded["max_accuracy"], loaded["epoch"]) == (79.4, 299)
    assert all(torch.equal(loaded["model"][k], official["model"][k]) for k in official["model"])

    # The public loader takes the same file: the backbone gets the official weights.
    backbone = json.loads((REFERENCE_DIR / "agent_pvt_aaaa_imagenet.json").read_text())["model"]["backbone"]
    overrides = {key: backbone[key] for key in ("embed_dims", "num_heads", "mlp_ratios", "depths")}
    model = agent_hf.load_official_checkpoint(path, agent_hf.preset_config("agent-pvt-t-fpn-ade20k", **overrides))
    state = model.state_dict()
    expected = expected_state_dict(official["model"], model.config.model_type, skip=("head.weight", "head.bias"))
    assert len(expected) == len(official["model"]) - 2  # all but the classification head
    assert all(torch.equal(state[key], tensor) for key, tensor in expected.items())
