"""Hostile input, round 2: output folders. No output folder may hold, contain or lie inside an input of the run;
symbolic links are followed consistently (never half-replaced); what a killed run leaves behind is found by the next
run (and never uploaded); a kill between the two renames of a swap loses nothing."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from conftest import tiny_swin_config
from script_helpers import COMMON, TINY_MODEL, load_script, run_in_process
from transformers import AutoModelForSemanticSegmentation

from agent_hf.hub.folder_checks import validate_model_folder
from agent_hf.output_folders import OutputFolderError, check_output_folder, recover_leftovers, write_folder
from agent_hf.saving import save_model_folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def data_folder(path: Path) -> Path:
    (path / "images").mkdir(parents=True)
    for index in range(3):
        (path / "images" / f"{index}.jpg").write_bytes(b"photo %d" % index)
    return path


# ------------------------------------------------------------------------------------------------- the guard
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_inside_an_input_is_refused(tmp_path, overwrite):
    data = data_folder(tmp_path / "DATA")
    before = snapshot(data)
    for output in (data / "images", data / "new" / "model"):
        with pytest.raises(OutputFolderError) as info, write_folder(output, overwrite=overwrite, inputs=[data]) as s:
            (s / "config.json").write_text("{}")
        assert info.value.reason == "inside_input" and "lies inside" in str(info.value)
    assert snapshot(data) == before and sorted(p.name for p in data.iterdir()) == ["images"]


def test_a_folder_holding_an_input_is_refused_even_through_a_link(tmp_path):
    data = data_folder(tmp_path / "DATA")
    link = tmp_path / "link"
    link.symlink_to(data / "images")
    with pytest.raises(OutputFolderError, match="lies inside"):
        check_output_folder(link, overwrite=True, inputs=[data])
    with pytest.raises(OutputFolderError, match="holds this run's input"):
        check_output_folder(tmp_path, overwrite=True, inputs=[link])
    check_output_folder(tmp_path / "elsewhere", overwrite=True, inputs=[data, "agent-swin-t-upernet-ade20k", None])


def test_training_never_writes_inside_its_data(tmp_path):
    """The issue's case: ``--output_dir DATA/images --overwrite_output_dir`` replaced the training images."""
    from agent_hf.data import make_synthetic_scene_parsing, save_as_image_folders

    data = tmp_path / "DATA"
    save_as_image_folders(make_synthetic_scene_parsing(2, 1, max_size=96), data)
    inner = sorted(p for p in data.iterdir() if p.is_dir())[0]
    before = snapshot(data)
    train = load_script("run_semantic_segmentation")
    for extra in (["--overwrite_output_dir"], []):
        code, stderr, _ = run_in_process(
            train,
            [
                *TINY_MODEL,
                *COMMON,
                "--max_steps",
                "1",
                "--do_train",
                "--train_dir",
                data,
                "--output_dir",
                inner,
                *extra,
            ],
        )
        assert code == 1 and "lies inside" in stderr and "--overwrite_output_dir" not in stderr, stderr
    assert snapshot(data) == before


# ---------------------------------------------------------------------------------------------- symbolic links
def test_an_output_link_is_followed_and_kept(tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    (target / "old.txt").write_text("old")
    link = tmp_path / "out"
    link.symlink_to(target)
    with write_folder(link, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "real"]  # no stray .old-* or staging folder

    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "not-yet")
    with write_folder(dangling) as staging:
        (staging / "a.txt").write_text("a")
    assert dangling.is_symlink() and (tmp_path / "not-yet" / "a.txt").read_text() == "a"


def test_a_loop_of_links_is_refused(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OutputFolderError, match="loop of symbolic links"):
        check_output_folder(tmp_path / "a", overwrite=True)


def test_an_output_link_to_a_non_empty_folder_is_refused_without_overwrite(tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    (target / "mine.txt").write_text("mine")
    (tmp_path / "out").symlink_to(target)
    with pytest.raises(OutputFolderError) as info, write_folder(tmp_path / "out") as staging:
        (staging / "x").write_text("x")
    assert info.value.reason == "not_empty" and (target / "mine.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------- a killed run
def test_leftovers_of_a_killed_run_are_removed_by_the_next(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    for leftover in (".out.staging-1a2b3c4d", ".out.old-5e6f7a8b"):
        (tmp_path / leftover).mkdir()
        (tmp_path / leftover / "model.safetensors").write_bytes(b"a full copy")
    (out / ".staging-0badf00d").mkdir()
    (tmp_path / ".out.staging-99990000" / "checkpoint-500").mkdir(parents=True)  # a killed training run's
    with caplog.at_level(logging.WARNING), write_folder(out, overwrite=True) as staging:
        (staging / "config.json").write_text('{"new": 1}')
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.staging-99990000", "out"]
    assert (out / "config.json").read_text() == '{"new": 1}'
    assert ".out.staging-1a2b3c4d" in caplog.text and ".out.old-5e6f7a8b" in caplog.text
    assert f"resume from {tmp_path / '.out.staging-99990000' / 'checkpoint-500'}" in caplog.text


def test_a_kill_between_the_two_renames_loses_nothing(tmp_path):
    out = tmp_path / "out"
    (tmp_path / ".out.old-11112222").mkdir()  # the previous content, renamed away
    (tmp_path / ".out.old-11112222" / "mine.txt").write_text("mine")
    (tmp_path / ".out.staging-33334444").mkdir()  # the new content, never renamed in
    assert [p.name for p in recover_leftovers(out)] == [".out.old-11112222", ".out.staging-33334444"]
    assert (out / "mine.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    # Through write_folder: the restored folder is the user's, so without overwrite it is refused and kept.
    os.rename(out, tmp_path / ".out.old-55556666")
    with pytest.raises(OutputFolderError, match="not empty"), write_folder(out) as staging:
        (staging / "x").write_text("x")
    assert (out / "mine.txt").read_text() == "mine"


def test_hidden_staging_folders_are_never_uploaded(tmp_path):
    model = AutoModelForSemanticSegmentation.from_config(tiny_swin_config())
    folder = Path(save_model_folder(model, tmp_path / "model"))
    files = validate_model_folder(folder)
    for leftover in (".staging-1a2b3c4d", ".cache-of-mine"):
        (folder / leftover).mkdir()
        (folder / leftover / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    assert validate_model_folder(folder) == files and not any(name.startswith(".") for name in files)


def test_an_upgrade_is_all_or_nothing(tmp_path, monkeypatch):
    """A move that fails half-way (here the last one, config.json, on a file system that refuses it) puts back the
    files already moved: the folder is as it was."""
    from agent_hf.saving import upgrade_model_folder

    model = AutoModelForSemanticSegmentation.from_config(tiny_swin_config())
    folder = Path(save_model_folder(model, tmp_path / "model"))
    for name in ("handler.py", "pipeline_agent.py", "requirements.txt"):
        (folder / name).write_text(f"# an older {name}\n")
    (folder / "preprocessor_config.json").unlink()  # a file the upgrade adds
    before = snapshot(folder)
    real_replace = os.replace

    def refuse_config(source, target, *args, **kwargs):
        if Path(target).name == "config.json" and ".previous" not in str(source):
            raise PermissionError(f"[Errno 1] Operation not permitted: {target!r}")
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", refuse_config)
    with pytest.raises(PermissionError, match="config.json"):
        upgrade_model_folder(folder)
    assert snapshot(folder) == before
    monkeypatch.setattr(os, "replace", real_replace)
    upgrade_model_folder(folder)
    assert (folder / "preprocessor_config.json").is_file()
    assert (folder / "handler.py").read_text() != "# an older handler.py\n"


def test_training_into_a_linked_output_folder_replaces_what_the_link_points_to(tmp_path):
    """The issue's case: a traceback (``Cannot call rmtree on a symbolic link``), the link replaced by a real folder
    and a stray ``.old-*`` link left."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "old-run.txt").write_text("replaced with --overwrite_output_dir")
    (tmp_path / "out").symlink_to(real)
    (tmp_path / ".out.staging-deadbeef").mkdir()  # left by a killed run
    train = load_script("run_semantic_segmentation")
    code, stderr, _ = run_in_process(
        train,
        [*TINY_MODEL, *COMMON, "--max_steps", "1", "--do_train", "--output_dir", tmp_path / "out",
         "--overwrite_output_dir"],
    )  # fmt: skip
    assert code == 0, stderr
    assert (tmp_path / "out").is_symlink() and (real / "trainer_state.json").is_file()
    assert not (real / "old-run.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "real"]


def test_a_dangling_link_in_an_image_folder_is_named(tmp_path):
    from agent_hf.data import make_synthetic_scene_parsing, save_as_image_folders
    from agent_hf.data.ade20k import find_split_folders, scene_parsing_folder

    save_as_image_folders(make_synthetic_scene_parsing(2, 1, max_size=96), tmp_path / "ade")
    images, _ = find_split_folders(tmp_path / "ade", "train")
    assert len(scene_parsing_folder(tmp_path / "ade", "train")) == 2
    (images / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(ValueError, match=r"gone\.jpg is a symbolic link to a missing file: fix or remove it"):
        scene_parsing_folder(tmp_path / "ade", "train")
