"""Nothing lost: every script that writes a folder refuses a non-empty one unless told, never replaces a folder holding
its inputs or the current directory, writes into a staging folder and swaps it in only when complete, with the
umask's permissions."""

import os
import stat
import sys
from pathlib import Path

import pytest
from conftest import REFERENCE_DIR, tiny_swin_config
from script_helpers import COMMON, SCRIPTS, TINY_MODEL, load_script, run, run_in_process
from transformers import AutoModelForSemanticSegmentation

import agent_hf
from agent_hf.argument_checks import ScriptError
from agent_hf.output_folders import OutputFolderError, add_files, check_output_folder, write_folder
from agent_hf.saving import save_model_folder

CHECKPOINT = REFERENCE_DIR / "agent_swin_aaab_upernet.weights.safetensors"
OFFICIAL_CONFIG = REFERENCE_DIR / "agent_swin_aaab_upernet.json"


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def user_folder(path: Path) -> Path:
    """A folder with the user's own files in it."""
    (path / "notes").mkdir(parents=True)
    (path / "notes" / "ideas.txt").write_text("do not lose me")
    (path / "results.csv").write_text("a,b\n1,2\n")
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------------------------- the shared rules
def test_a_non_empty_folder_is_refused_and_kept(tmp_path):
    folder = user_folder(tmp_path / "out")
    before = snapshot(folder)
    with pytest.raises(OutputFolderError, match="is not empty") as error, write_folder(folder) as staging:
        (staging / "model.safetensors").write_bytes(b"new")
    assert error.value.reason == "not_empty"
    assert snapshot(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_replaces_only_after_the_new_folder_is_complete(tmp_path):
    folder = user_folder(tmp_path / "out")
    before = snapshot(folder)
    with pytest.raises(RuntimeError, match="writing failed"), write_folder(folder, overwrite=True) as staging:
        (staging / "half.bin").write_bytes(b"x")
        assert snapshot(folder) == before  # the old folder is untouched while the new one is written
        raise RuntimeError("writing failed")
    assert snapshot(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no staging left"

    with write_folder(folder, overwrite=True) as staging:
        (staging / "config.json").write_text("{}")
    assert snapshot(folder) == {"config.json": b"{}"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "the old folder is removed after the swap"


def test_a_folder_holding_an_input_or_the_current_directory_is_never_replaced(tmp_path, monkeypatch):
    folder = user_folder(tmp_path / "out")
    before = snapshot(folder)
    with pytest.raises(OutputFolderError, match="holds this run's input") as error:
        check_output_folder(folder, overwrite=True, inputs=[folder / "notes" / "ideas.txt", None, "not/a/path"])
    assert error.value.reason == "holds_input"
    monkeypatch.chdir(folder / "notes")
    for target in (folder, Path(".."), Path(".")):
        with pytest.raises(OutputFolderError, match="current directory") as error:
            check_output_folder(target, overwrite=True)
        assert error.value.reason == "current_directory"
    assert snapshot(folder) == before


def test_an_own_earlier_output_is_replaced_without_overwrite(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "marker.json").write_text("{}")
    with write_folder(folder, is_own_output=lambda path: (path / "marker.json").is_file()) as staging:
        (staging / "marker.json").write_text('{"run": 2}')
    assert snapshot(folder) == {"marker.json": b'{"run": 2}'}


def test_model_folders_get_the_umask_permissions(tmp_path, umask_022):
    """transformers writes the weights 0600 and mkdtemp staging is 0700: the swapped-in folder is 0755/0644."""
    model = agent_hf.AgentSwinForSemanticSegmentation(tiny_swin_config())
    with write_folder(tmp_path / "model") as staging:
        model.save_pretrained(staging)
    assert mode(tmp_path / "model") == 0o755
    assert {mode(p) for p in (tmp_path / "model").iterdir()} == {0o644}

    run_dir = tmp_path / "run"
    with add_files(run_dir) as staging:
        model.save_pretrained(staging)
        assert not (run_dir / "config.json").exists(), "files appear only once all are written"
    assert {mode(p) for p in run_dir.iterdir()} == {0o644}
    assert AutoModelForSemanticSegmentation.from_pretrained(run_dir).config.embed_dim == 16

    # The library's own writer, called directly (no script around it), into an existing folder of the user's.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    os.chmod(mine / "notes.txt", 0o600)
    save_model_folder(model, mine)
    assert mode(mine / "notes.txt") == 0o600 and (mine / "notes.txt").read_text() == "keep me"
    written = [p for p in mine.iterdir() if p.name != "notes.txt"]
    assert {"model.safetensors", "config.json", "handler.py"} <= {p.name for p in written}
    assert {mode(p) for p in written} == {0o644}


# --------------------------------------------------------------------------------------------- the conversion script
@pytest.fixture(scope="module")
def convert():
    return load_script("convert_official_checkpoint")


def conversion_args(output_dir, *extra):
    return ["--checkpoint", CHECKPOINT, "--official_config", OFFICIAL_CONFIG, "--output_dir", output_dir, *extra]


def test_conversion_refuses_a_non_empty_folder_and_the_current_directory(convert, tmp_path, monkeypatch):
    folder = user_folder(tmp_path / "out")
    before = snapshot(folder)
    code, stderr, _ = run_in_process(convert, conversion_args(folder))
    assert code == 1 and stderr.count("\n") == 1 and "is not empty" in stderr and "--overwrite_output_dir" in stderr
    assert snapshot(folder) == before

    # `--output_dir .` in the folder that holds the checkpoint: refused, nothing deleted, even when overwriting.
    workdir = user_folder(tmp_path / "work")
    (workdir / "official.safetensors").write_bytes(CHECKPOINT.read_bytes())
    before = snapshot(workdir)
    monkeypatch.chdir(workdir)
    code, stderr, _ = run_in_process(
        convert,
        ["--checkpoint", "official.safetensors", "--official_config", OFFICIAL_CONFIG, "--output_dir", ".",
         "--overwrite_output_dir"],
    )  # fmt: skip
    assert code == 1 and "current directory" in stderr
    assert snapshot(workdir) == before


def test_conversion_never_replaces_the_folder_of_its_checkpoint(convert, tmp_path):
    folder = user_folder(tmp_path / "weights")
    (folder / "official.safetensors").write_bytes(CHECKPOINT.read_bytes())
    before = snapshot(folder)
    code, stderr, _ = run_in_process(
        convert,
        ["--checkpoint", folder / "official.safetensors", "--official_config", OFFICIAL_CONFIG,
         "--output_dir", folder, "--overwrite"],
    )  # fmt: skip
    assert code == 1 and "holds this run's input" in stderr
    assert snapshot(folder) == before


def test_conversion_with_overwrite_replaces_a_folder_with_a_complete_model(convert, tmp_path, umask_022):
    folder = user_folder(tmp_path / "out")
    code, stderr, _ = run_in_process(convert, conversion_args(folder, "--overwrite_output_dir"))
    assert code == 0, stderr
    assert not (folder / "notes").exists()
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in folder.iterdir()}
    assert mode(folder) == 0o755 and mode(folder / "model.safetensors") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_conversion_errors_are_one_line_with_exit_code_1(convert, tmp_path):
    """The real command line: a missing checkpoint gives one line, no traceback, exit code 1; with --debug the error
    propagates (the interpreter prints its traceback). A wrong argument is one line too."""
    missing = ["--checkpoint", tmp_path / "missing.pth", "--preset", "agent-pvt-t-fpn-ade20k", "--output_dir",
               tmp_path / "o"]  # fmt: skip
    result = run([sys.executable, SCRIPTS / "convert_official_checkpoint.py", *missing], check=False)
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "no checkpoint file at" in result.stderr
    assert not (tmp_path / "o").exists()
    with pytest.raises(ScriptError, match="no checkpoint file at"):
        run_in_process(convert, [*missing, "--debug"])
    assert not (tmp_path / "o").exists()
    code, stderr, _ = run_in_process(convert, ["--checkpoint", "x.pth", "--preset", "nope", "--output_dir", "o"])
    assert code == 1 and stderr.count("\n") == 1 and "invalid choice: 'nope'" in stderr


# --------------------------------------------------------------------------------------------------------- the demo
@pytest.fixture(scope="module")
def demo():
    return load_script("demo")


DEMO_ARGS = ["--max_steps", "1", "--batch_size", "2", "--num_train", "2", "--num_val", "3"]


def test_demo_replaces_its_own_output_and_refuses_other_folders(demo, tmp_path):
    """`make demo` twice works: the demo recognizes its earlier output. A folder with anything else is refused
    unless --overwrite."""
    out = tmp_path / "demo"
    for _ in range(2):
        code, stderr, _ = run_in_process(demo, ["--output_dir", out, *DEMO_ARGS])
        assert code == 0, stderr
        assert {p.name for p in out.iterdir()} == {"model", "prediction.png", "eval_per_class.json", "demo_run.json"}
    assert AutoModelForSemanticSegmentation.from_pretrained(out / "model").config.num_labels == 8

    (out / "my_notes.txt").write_text("mine")
    before = snapshot(out)
    code, stderr, _ = run_in_process(demo, ["--output_dir", out, *DEMO_ARGS])
    assert code == 1 and "is not empty" in stderr and "--overwrite" in stderr
    assert snapshot(out) == before
    code, stderr, _ = run_in_process(demo, ["--output_dir", out, *DEMO_ARGS, "--overwrite"])
    assert code == 0, stderr
    assert not (out / "my_notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


# ------------------------------------------------------------------------------------------------ the training script
@pytest.fixture(scope="module")
def train():
    return load_script("run_semantic_segmentation")


def test_training_refuses_a_non_empty_folder_before_doing_anything(train, tmp_path):
    folder = user_folder(tmp_path / "out")
    before = snapshot(folder)
    code, stderr, _ = run_in_process(
        train, [*TINY_MODEL, *COMMON, "--max_steps", "1", "--do_train", "--output_dir", folder]
    )
    assert code == 1 and "is not empty and holds no checkpoint to resume" in stderr
    assert "--overwrite_output_dir" in stderr and snapshot(folder) == before


def test_training_with_overwrite_replaces_the_folder_once_the_model_is_saved(train, tmp_path, umask_022):
    folder = user_folder(tmp_path / "out")
    code, stderr, _ = run_in_process(
        train,
        [*TINY_MODEL, *COMMON, "--max_steps", "2", "--do_train", "--output_dir", folder, "--overwrite_output_dir"],
    )
    assert code == 0, stderr
    assert not (folder / "notes").exists() and (folder / "trainer_state.json").is_file()
    assert AutoModelForSemanticSegmentation.from_pretrained(folder).config.embed_dim == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "the staging folder became the output folder"
    assert mode(folder / "model.safetensors") == 0o644


def test_training_never_replaces_the_folder_of_its_data(train, tmp_path):
    from agent_hf.data import make_synthetic_scene_parsing, save_as_image_folders

    folder = tmp_path / "project"
    save_as_image_folders(make_synthetic_scene_parsing(2, 1, max_size=96), folder / "ade")
    before = snapshot(folder)
    code, stderr, _ = run_in_process(
        train,
        [*TINY_MODEL, *COMMON, "--max_steps", "1", "--do_train", "--train_dir", folder / "ade",
         "--output_dir", folder, "--overwrite_output_dir"],
    )  # fmt: skip
    assert code == 1 and "holds this run's input" in stderr
    assert snapshot(folder) == before


# ---------------------------------------------------------------------------------------------- prepare_ade20k
def test_prepare_ade20k_refuses_a_non_empty_folder_and_the_folder_of_its_data(tmp_path):
    from agent_hf.data import make_synthetic_scene_parsing, save_as_image_folders

    prepare = load_script("prepare_ade20k")
    ade = save_as_image_folders(make_synthetic_scene_parsing(2, 1, max_size=96), tmp_path / "ADEChallengeData2016")
    out = user_folder(tmp_path / "out")
    before, ade_before = snapshot(out), snapshot(ade)
    code, stderr, _ = run_in_process(prepare, ["--ade_dir", ade, "--output_dir", out])
    assert code == 1 and "is not empty" in stderr and snapshot(out) == before
    code, stderr, _ = run_in_process(prepare, ["--ade_dir", ade, "--output_dir", tmp_path, "--overwrite"])
    assert code == 1 and "holds this run's input" in stderr and snapshot(ade) == ade_before
