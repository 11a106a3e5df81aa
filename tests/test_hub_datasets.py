"""ADE20K by name with datasets 4+ and prepared ADE20K, read from a real (local) Hub server at a revision.

`scene_parse_150` is a loading script on the Hub, which datasets 4+ no longer runs: the training script reads its
parquet export (revision `refs/convert/parquet`, configuration `scene_parsing`) and, where there is none, stops with
one message pointing at ADEChallengeData2016. `scripts/prepare_ade20k.py` writes ADEChallengeData2016 as a parquet
dataset that the script loads by path or, once pushed, by repo id.
"""

import io
import json
import subprocess
import sys

import datasets
import pytest
from conftest import REPO_ROOT
from hub_server import LocalHubServer
from script_helpers import COMMON, TINY_MODEL, load_script, read_json, run_in_process, script_env

from agent_hf.data import make_synthetic_scene_parsing, save_as_image_folders

TOKEN = "hf_test_token"


def run_with_hub(hub: LocalHubServer, tmp_path, calls: list[tuple[str, list]]) -> list[tuple[int, str, str]]:
    """Runs ``[(script name, argv), ...]`` in one subprocess whose Hub is ``hub`` (huggingface_hub and datasets read
    the endpoint when imported); returns each call's ``(exit code, stderr, output)``."""
    plan, answer = tmp_path / "calls.json", tmp_path / "answers.json"
    plan.write_text(json.dumps([(name, [str(arg) for arg in argv]) for name, argv in calls]))
    program = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from script_helpers import load_script, run_in_process; "
        "calls = json.load(open(sys.argv[2])); "
        "json.dump([run_in_process(load_script(name), argv) for name, argv in calls], open(sys.argv[3], 'w'))"
    )
    env = script_env(
        HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf_home"), HF_TOKEN=TOKEN,
        NO_PROXY="127.0.0.1", HF_HUB_DISABLE_XET="1",
    )  # fmt: skip
    command = [sys.executable, "-c", program, str(REPO_ROOT / "tests"), str(plan), str(answer)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [tuple(item) for item in json.loads(answer.read_text())]


def parquet_bytes(dataset: datasets.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.to_parquet(buffer)
    return buffer.getvalue()


def add_scene_parse_150(hub: LocalHubServer, repo_id: str, with_export: bool) -> datasets.DatasetDict:
    """A dataset repo shaped like the Hub's scene_parse_150: a loading script on main and, if ``with_export``, the
    parquet export the Hub writes (`{config}/{split}/NNNN.parquet` on `refs/convert/parquet`)."""
    script = {"scene_parse_150.py": b"import datasets\n", "README.md": b"---\nlicense: bsd-3-clause\n---\n"}
    hub.add_files(repo_id, script, repo_type="dataset")
    data = make_synthetic_scene_parsing(4, 3, num_classes=5, max_size=96)
    if with_export:
        files = {
            f"scene_parsing/{split}/0000.parquet": parquet_bytes(part.add_column("scene_category", [3] * len(part)))
            for split, part in data.items()
        }
        files["scene_parsing/test/0000.parquet"] = parquet_bytes(data["validation"].remove_columns("annotation"))
        files["instance_segmentation/train/0000.parquet"] = parquet_bytes(
            data["train"].rename_column("annotation", "x")
        )
        hub.add_files(repo_id, files, revision="refs/convert/parquet", repo_type="dataset", message="Update parquet")
    return data


# Trains one step on the prepared ADE20K and evaluates.
RUN_SMALL = [*TINY_MODEL, *COMMON, "--do_reduce_labels", "--max_steps", "1", "--do_train", "--do_eval"]


@pytest.fixture(scope="module")
def hub_runs(tmp_path_factory):
    """The scripts' runs of both tests below, in one subprocess (each costs seconds of imports) against one local Hub
    holding a scene_parse_150 with its parquet export, one without, and the prepared ADE20K pushed by the first call.
    Returns the answers (by name), the Hub's requests and the pushed dataset repo, and the folders used."""
    tmp_path = tmp_path_factory.mktemp("hub_runs")
    ade = save_as_image_folders(make_synthetic_scene_parsing(4, 3, num_classes=5, max_size=96), tmp_path / "ADE")
    local = tmp_path / "ade20k"
    evaluate = [*TINY_MODEL, *COMMON, "--do_eval", "--max_eval_samples", "2"]
    calls = {
        "scene_parse_150": ("run_semantic_segmentation", [*evaluate, "--dataset_name", "scene_parse_150",
                                                          "--output_dir", tmp_path / "eval"]),
        "without_export": ("run_semantic_segmentation", [*evaluate, "--dataset_name", "someone/scene_parse_150",
                                                         "--output_dir", tmp_path / "missing"]),
        "prepare": ("prepare_ade20k", ["--ade_dir", ade, "--output_dir", local, "--max_shard_size", "0.02",
                                       "--push_to_hub", "--hub_dataset_id", "team/ade20k", "--private"]),
        "by_repo": ("run_semantic_segmentation", [*RUN_SMALL, "--dataset_name", "team/ade20k", "--streaming",
                                                  "--output_dir", tmp_path / "by_repo"]),
    }  # fmt: skip
    with LocalHubServer(tokens={TOKEN}) as hub:
        add_scene_parse_150(hub, "zhoubolei/scene_parse_150", with_export=True)
        add_scene_parse_150(hub, "someone/scene_parse_150", with_export=False)
        answers = dict(zip(calls, run_with_hub(hub, tmp_path, list(calls.values()))))
        return dict(
            answers=answers,
            reads={(r.method, r.path) for r in hub.requests},
            remote=hub.files("team/ade20k", repo_type="dataset"),
            private=hub.repo("team/ade20k", "dataset").private,
            root=tmp_path,
            ade=ade,
            local=local,
        )


def test_scene_parse_150_loads_from_its_parquet_export_or_stops_with_one_message(hub_runs):
    found, *_ = hub_runs["answers"]["scene_parse_150"]
    missing_code, missing_error, _ = hub_runs["answers"]["without_export"]
    assert found == 0
    report = read_json(hub_runs["root"] / "eval" / "eval_per_class.json")
    assert report["num_images"] == 2 and len(report["per_class"]) == 150  # ADE20K's classes
    assert ("GET", "/api/datasets/zhoubolei/scene_parse_150/revision/refs%2Fconvert%2Fparquet") in hub_runs["reads"]

    assert missing_code == 1 and missing_error.count("\n") == 1
    for part in ("someone/scene_parse_150", "no parquet export", "loading script", "ADEChallengeData2016",
                 "--train_dir", "scripts/prepare_ade20k.py"):  # fmt: skip
        assert part in missing_error, missing_error


def test_prepared_ade20k_loads_by_path_and_by_repo_id(hub_runs, tmp_path):
    """prepare_ade20k.py writes parquet shards + id2label.json locally and pushes the same to a dataset repo; the
    training script trains and evaluates on either (streaming the Hub copy)."""
    answers, remote, ade, local = hub_runs["answers"], hub_runs["remote"], hub_runs["ade"], hub_runs["local"]
    assert [answers[name][0] for name in ("prepare", "by_repo")] == [0, 0], answers
    assert hub_runs["private"] and remote["id2label.json"] == (local / "id2label.json").read_bytes()
    shards = sorted(path.relative_to(local).as_posix() for path in (local / "data").iterdir())
    assert len(shards) > 2 and sorted(p for p in remote if p.startswith("data/")) == shards
    assert all(remote[shard] == (local / shard).read_bytes() for shard in shards)
    assert json.loads((local / "id2label.json").read_text())["0"] == "wall"

    prepared = datasets.load_dataset(str(local))
    assert {split: len(part) for split, part in prepared.items()} == {"train": 4, "validation": 3}
    stored = prepared["train"].cast_column("image", datasets.Image(decode=False))[0]["image"]["bytes"]
    assert stored == (ade / "images" / "training" / "synthetic_train_00000001.jpg").read_bytes()

    assert read_json(hub_runs["root"] / "by_repo" / "eval_per_class.json")["num_images"] == 3
    code, stderr, _ = run_in_process(
        load_script("run_semantic_segmentation"),
        [*RUN_SMALL, "--dataset_name", local, "--output_dir", tmp_path / "by_path"],
    )
    assert code == 0, stderr
    assert read_json(tmp_path / "by_path" / "eval_per_class.json")["num_images"] == 3
