"""Compatibility check of the Hub-shipped model code across transformers versions (`make test-compat`).

    python tests/compat_check.py [--versions 4.57.6 5.0.0 5.24.0] [--parity_version 5.0.0]
                                 [--common_tests_versions 4.57.6 5.0.0]

1. In this interpreter (the project's venv, agent_hf importable) it writes, for both families, a tiny model folder
   with `save_model_folder` and a folder as agent-hf 0.1.0 wrote it (the 0.1.0 model code, taken from git, builds
   and saves it; the current shipped code is copied next to it, as in a Hub repo whose code was updated), and the
   outputs of both on a fixed input. The Python files of the current folders (the Hub-shipped modules, exactly as
   `save_model_folder` ships them) also become the package `agent_hf_shipped` (.cache-compat/shipped).
2. For each version it creates `.venv-compat/<version>` on first use (that transformers; torch 2.13.0 and the other
   packages every version shares are installed once, in `.venv-compat/base`, which each version venv reads after its
   own site-packages; no torchvision; reused when present) and runs the worker part of this file there, in a process
   where agent_hf cannot be imported: every folder loads with `trust_remote_code=True` through
   `AutoModelForSemanticSegmentation`, `AutoModel` and `AutoBackbone`, and gives the outputs saved in step 1. More
   checks of a loaded folder (e.g. `pipeline("image-segmentation")`) go into `FOLDER_CHECKS`. The image-classification
   folders of both families load through `AutoModelForImageClassification` and `pipeline("image-classification")`
   (`CLASSIFICATION_FOLDER_CHECKS`). In the venvs of
   `--common_tests_versions` it then runs tests/test_transformers_common.py: transformers' own common model tests,
   with the test files of THAT version, on the package where it is installed (`--parity_version`), else on
   `agent_hf_shipped` (transformers 4.57, where the package cannot be installed).
3. In the venv of `--parity_version` (the package's floor) it installs the package and runs the parity subset.

Exits non-zero on the first failure; prints the time of each step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The test session's setup (tests/conftest.py): every Hugging Face cache in a temporary folder and offline mode, for
# this process and the venvs' processes it starts; it must run before anything imports transformers.
sys.path.insert(0, str(REPO_ROOT / "tests"))
import conftest  # noqa: E402, F401

DEFAULT_VERSIONS = ("4.57.6", "5.0.0", "5.24.0")
DEFAULT_PARITY_VERSION = "5.0.0"
VENV_ROOT = REPO_ROOT / ".venv-compat"
WORK_DIR = REPO_ROOT / ".cache-compat" / "folders"
# Installed once in `.venv-compat/base`, which every version venv reads: torch 2.13.0 is the local CPU wheel (an
# unpinned torch would pull a CUDA build); never torchvision. pytest and parameterized run transformers' common tests,
# accelerate their device_map / offload tests (as most users have it).
SHARED_PACKAGES = ("torch==2.13.0", "safetensors", "pillow", "numpy", "accelerate", "pytest", "parameterized")
# The model code as agent-hf 0.1.0 shipped it (the last commit before the ModuleList renaming).
V010_COMMIT = "35d7462"
V010_MODULES = (
    "configuration_agent_swin.py",
    "configuration_agent_pvt.py",
    "modeling_agent_swin.py",
    "modeling_agent_pvt.py",
    "agent_attention.py",
    "heads.py",
    "layers.py",
)
FAMILIES = ("swin", "pvt")
# transformers' own common tests (tests/test_transformers_common.py, with that version's test files) run in these
# venvs too; `make test` runs them on the newest. Where the package is not installed, the classes come from
# SHIPPED_PACKAGE: the Hub-shipped modules alone, as a package (the test file reads its name from MODELS_MODULE_ENV).
DEFAULT_COMMON_TESTS_VERSIONS = ("4.57.6", "5.0.0")
SHIPPED_DIR = REPO_ROOT / ".cache-compat" / "shipped"
SHIPPED_PACKAGE = "agent_hf_shipped"
MODELS_MODULE_ENV = "AGENT_HF_TEST_MODELS_MODULE"
SHIPPED_INIT = '''"""agent_hf's Hub-shipped modules alone (written by tests/compat_check.py), registered with
the Auto classes as `import agent_hf` registers them."""

from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForSemanticSegmentation

from .configuration_agent_pvt import AgentPvtConfig
from .configuration_agent_swin import AgentSwinConfig
from .modeling_agent_pvt import AgentPvtBackbone, AgentPvtForSemanticSegmentation, AgentPvtModel
from .modeling_agent_swin import AgentSwinBackbone, AgentSwinForSemanticSegmentation, AgentSwinModel

for config_class, model, backbone, segmentation in (
    (AgentSwinConfig, AgentSwinModel, AgentSwinBackbone, AgentSwinForSemanticSegmentation),
    (AgentPvtConfig, AgentPvtModel, AgentPvtBackbone, AgentPvtForSemanticSegmentation),
):
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model, exist_ok=True)
    AutoBackbone.register(config_class, backbone, exist_ok=True)
    AutoModelForSemanticSegmentation.register(config_class, segmentation, exist_ok=True)
'''


# ------------------------------------------------------------------------------------------------ step 1 (main venv)
def tiny_config(family: str, module):
    """The shared tiny configs of tests/conftest.py, built with `module`'s config classes."""
    from conftest import TINY_PVT, TINY_SWIN

    if family == "swin":
        return module.AgentSwinConfig(**TINY_SWIN, num_labels=5, out_features=["stage1", "stage2", "stage3", "stage4"])
    return module.AgentPvtConfig(**TINY_PVT, num_labels=5, out_features=["stage1", "stage2", "stage3", "stage4"])


def import_v010_code(destination: Path):
    """The 0.1.0 shipped modules as a package `agent_hf_v010` (from git), imported."""
    import importlib

    package = destination / "agent_hf_v010"
    package.mkdir(parents=True, exist_ok=True)
    for name in V010_MODULES:
        source = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "show", f"{V010_COMMIT}:src/agent_hf/{name}"],
            capture_output=True,
            text=True,
        )
        if source.returncode:
            raise SystemExit(f"compat_check: cannot read the 0.1.0 model code from git: {source.stderr.strip()}")
        (package / name).write_text(source.stdout)
    (package / "__init__.py").write_text(
        "from .configuration_agent_pvt import AgentPvtConfig\n"
        "from .configuration_agent_swin import AgentSwinConfig\n"
        "from .modeling_agent_pvt import AgentPvtForSemanticSegmentation\n"
        "from .modeling_agent_swin import AgentSwinForSemanticSegmentation\n"
    )
    sys.path.insert(0, str(destination))
    return importlib.import_module("agent_hf_v010")


def write_folders(work_dir: Path) -> list[str]:
    """Model folders of both families (current and 0.1.0) with the outputs they must give. Returns their names."""
    import torch
    from transformers.dynamic_module_utils import get_relative_import_files

    import agent_hf
    from agent_hf.saving import save_model_folder

    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    v010 = import_v010_code(work_dir.parent / "v010_code")
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(1, 3, 64, 80, generator=generator)
    names = []
    for family in FAMILIES:
        for kind, module in (("current", agent_hf), ("v010", v010)):
            torch.manual_seed(0)
            config = tiny_config(family, module)
            model_class = (
                module.AgentSwinForSemanticSegmentation if family == "swin" else module.AgentPvtForSemanticSegmentation
            )
            model = model_class(config).eval()
            with torch.no_grad():  # every weight matters (fresh LayerNorms are 1/0, as their default init)
                for parameter in model.parameters():
                    parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
            folder = work_dir / f"{family}-{kind}"
            if kind == "current":
                save_model_folder(model, folder)
            else:
                model.save_pretrained(folder, safe_serialization=True)
                # A Hub repo of 0.1.0 whose code was updated: the weights and config.json stay as 0.1.0 wrote them,
                # the model code is today's (the modules transformers ships with the modeling module).
                modeling = REPO_ROOT / "src" / "agent_hf" / "models" / f"modeling_agent_{family}.py"
                for path in [modeling, *get_relative_import_files(modeling)]:
                    shutil.copy(path, folder / Path(path).name)
            with torch.no_grad():
                outputs = model(pixel_values, output_hidden_states=True)
            expected = {"pixel_values": pixel_values, "logits": outputs.logits, "maps": list(outputs.hidden_states)}
            if kind == "current":  # a folder with the image processor and pipeline: the evaluation path's labels
                from PIL import Image

                from agent_hf.models.segmentation_inference import multiscale_inputs, segment

                image = Image.fromarray(torch.randint(0, 256, (90, 120, 3), generator=generator).byte().numpy())
                image.save(folder / "image.png")
                expected["label_map"] = segment(model, multiscale_inputs(image), (90, 120))[0]
            torch.save(expected, folder / "expected.pt")
            names.append(folder.name)
    return names + write_classification_folders(work_dir)


def write_classification_folders(work_dir: Path) -> list[str]:
    """Image-classification folders of both families (`{family}-classification`, written as the converter writes
    them: ImageNet-1k labels, the official evaluation transform as the image processor) with the logits and the
    `image-classification` pipeline's top 5 they must give. Returns their names."""
    import torch
    from PIL import Image
    from transformers import pipeline

    import agent_hf
    from agent_hf.data.imagenet import imagenet_id2label
    from agent_hf.models.image_processing_agent_classification import AgentClassificationImageProcessor
    from agent_hf.saving import save_model_folder

    generator = torch.Generator().manual_seed(1)
    id2label = imagenet_id2label()
    names = []
    for family in FAMILIES:
        torch.manual_seed(0)
        config = tiny_config(family, agent_hf)
        config.id2label, config.label2id = id2label, {name: i for i, name in id2label.items()}
        model_class = (
            agent_hf.AgentSwinForImageClassification if family == "swin" else agent_hf.AgentPvtForImageClassification
        )
        model = model_class(config).eval()
        with torch.no_grad():  # every weight matters (fresh LayerNorms are 1/0, as their default init)
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        folder = work_dir / f"{family}-classification"
        # A small input size keeps the pipeline fast; the transform is the official one (resize 73, crop 64).
        save_model_folder(model, folder, AgentClassificationImageProcessor(size=64, do_center_crop=True))
        image = Image.fromarray(torch.randint(0, 256, (90, 120, 3), generator=generator).byte().numpy())
        image.save(folder / "image.png")
        pixel_values = torch.randn(2, 3, 64, 64, generator=generator)
        with torch.no_grad():
            logits = model(pixel_values).logits
        top5 = pipeline("image-classification", model=str(folder), trust_remote_code=True)(image, top_k=5)
        expected = {"task": "image-classification", "pixel_values": pixel_values, "logits": logits}
        expected["top5"] = [(p["label"], float(p["score"])) for p in top5]
        torch.save(expected, folder / "expected.pt")
        names.append(folder.name)
    return names


def write_shipped_package(destination: Path, folders: list[Path]) -> None:
    """The package `destination/SHIPPED_PACKAGE`: the Python files of `folders` (written by `save_model_folder`: the
    Hub-shipped modules, exactly) and an `__init__` that imports the eight classes."""
    package = destination / SHIPPED_PACKAGE
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    for folder in folders:
        for path in folder.glob("*.py"):
            shutil.copy(path, package / path.name)
    (package / "__init__.py").write_text(SHIPPED_INIT)


# ------------------------------------------------------------------------------------------------ step 2 (each venv)
def site_packages(python: Path) -> Path:
    """The site-packages folder of the venv of `python`."""
    result = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(result.stdout.strip())


def ensure_base_venv() -> Path:
    """`.venv-compat/base`, created on first use: the packages every version venv shares (torch above all, the
    largest install), installed once. Returns the path of its site-packages."""
    venv = VENV_ROOT / "base"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"  # holds the list installed: a longer list installs what is new
    if not stamp.exists() or stamp.read_text().split() != list(SHARED_PACKAGES):
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        run([python, "-m", "pip", "install", "-q", *SHARED_PACKAGES])
        stamp.write_text("\n".join(SHARED_PACKAGES) + "\n")
    return site_packages(python)


def ensure_venv(version: str, with_package: bool = False) -> Path:
    """`.venv-compat/<version>`, created on first use: transformers at that version (and what it needs) in its own
    site-packages, the shared packages of the base venv after them (a .pth file); with the package installed when
    `with_package`."""
    venv = VENV_ROOT / version
    python = venv / "bin" / "python"
    stamp = venv / (".installed-package" if with_package else ".installed")
    base = ensure_base_venv()  # also on existing venvs: it installs what SHARED_PACKAGES gained since
    if stamp.exists():
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not (venv / ".installed").exists():
        (site_packages(python) / "agent-hf-compat-base.pth").write_text(f"{base}\n")
        run([python, "-m", "pip", "install", "-q", f"transformers=={version}"])
        (venv / ".installed").touch()
    if with_package:
        # The package with its dependencies, transformers held at this version, and pytest for the parity tests.
        run([python, "-m", "pip", "install", "-q", "-e", str(REPO_ROOT), "pytest", f"transformers=={version}"])
        stamp.touch()
    return python


def run(command, **kwargs) -> None:
    result = subprocess.run([str(c) for c in command], **kwargs)
    if result.returncode:
        raise SystemExit(f"compat_check: failed ({result.returncode}): {' '.join(str(c) for c in command)}")


def check_folders_in(python: Path, names: list[str], work_dir: Path) -> None:
    """Runs `worker` in `python`'s venv, with agent_hf not importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    # The folders' code is copied into a modules cache of this run only: the user's cache may hold other code under
    # the same folder names (another checkout, another run at the same time).
    with tempfile.TemporaryDirectory(prefix="agent-hf-compat-modules-") as modules_cache:
        run([python, __file__, "--worker", *names], cwd=work_dir, env={**env, "HF_MODULES_CACHE": modules_cache})


def run_common_tests_in(python: Path, with_package: bool) -> None:
    """Runs tests/test_transformers_common.py (transformers' common tests, with the test files of `python`'s
    transformers) in `python`'s venv, on the installed package or else on the Hub-shipped modules alone."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", MODELS_MODULE_ENV)}
    if not with_package:
        env.update(PYTHONPATH=str(SHIPPED_DIR), **{MODELS_MODULE_ENV: SHIPPED_PACKAGE})
    test_file = "tests/test_transformers_common.py"
    run([python, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", test_file], cwd=REPO_ROOT, env=env)


# ------------------------------------------------------------------------------------------------ worker
def check_outputs(folder: str, model_class: str, expected: dict) -> str:
    import torch
    import transformers

    if model_class == "AutoBackbone":
        # `AutoBackbone.from_pretrained(<local folder>)` asks the Hub whether the path is a repo on transformers
        # >= 5.3 (and falls back to timm); the folder's class, resolved from its auto_map, loads it everywhere.
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        reference = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True).auto_map[model_class]
        auto = get_class_from_dynamic_module(reference, folder)
    else:
        auto = getattr(transformers, model_class)
    model = auto.from_pretrained(folder, trust_remote_code=True).eval()
    if not type(model).__module__.startswith("transformers_modules"):
        raise AssertionError(f"{folder}: {model_class} did not load the folder's code ({type(model).__module__})")
    with torch.no_grad():
        if model_class in ("AutoModelForSemanticSegmentation", "AutoModelForImageClassification"):
            got, want = model(expected["pixel_values"]).logits, expected["logits"]
        elif model_class == "AutoBackbone":
            got, want = model(expected["pixel_values"]).feature_maps[-1], expected["maps"][-1]
        else:
            got, want = model(expected["pixel_values"]).last_hidden_state, expected["maps"][-1]
    error = ((got.double() - want.double()).norm() / want.double().norm()).item()
    if got.shape != want.shape or error > 1e-6:
        raise AssertionError(f"{folder}: {model_class} outputs differ (relative error {error:.3g})")
    return f"{type(model).__name__} rel. error {error:.1g}"


def check_logits(folder: str, expected: dict) -> str:
    return check_outputs(folder, "AutoModelForSemanticSegmentation", expected)


def check_base_model(folder: str, expected: dict) -> str:
    return check_outputs(folder, "AutoModel", expected)


def check_backbone(folder: str, expected: dict) -> str:
    return check_outputs(folder, "AutoBackbone", expected)


def check_pipeline(folder: str, expected: dict) -> str:
    """`pipeline("image-segmentation", trust_remote_code=True)` gives the evaluation path's label map, pixel for
    pixel (folders written with the image processor only; 0.1.0 folders have none)."""
    if "label_map" not in expected:
        return "no image processor in this folder (0.1.0)"
    import json

    import numpy as np
    import torch
    from PIL import Image
    from transformers import pipeline

    segments = pipeline("image-segmentation", model=folder, trust_remote_code=True)(Image.open(f"{folder}/image.png"))
    with open(f"{folder}/config.json") as file:
        label2id = {label: int(i) for i, label in json.load(file)["id2label"].items()}
    label_map = torch.full(expected["label_map"].shape, -1, dtype=torch.long)
    for segment in segments:
        mask = torch.from_numpy(np.asarray(segment["mask"]) > 0)
        label_map[mask] = label2id[segment["label"]]
    if not torch.equal(label_map, expected["label_map"]):
        agreement = (label_map == expected["label_map"]).double().mean().item()
        raise AssertionError(f"{folder}: the pipeline's label map agrees with the evaluation path on {agreement:.2%}")
    return f"{type(segments).__name__} of {len(segments)} masks == evaluation path"


def check_classifier_logits(folder: str, expected: dict) -> str:
    return check_outputs(folder, "AutoModelForImageClassification", expected)


def check_classification_pipeline(folder: str, expected: dict) -> str:
    """`pipeline("image-classification", trust_remote_code=True)` (the folder's image processor) gives the top 5
    labels and scores it gave with agent_hf installed."""
    from PIL import Image
    from transformers import pipeline

    top5 = pipeline("image-classification", model=folder, trust_remote_code=True)(
        Image.open(f"{folder}/image.png"), top_k=5
    )
    got = [(p["label"], float(p["score"])) for p in top5]
    want = expected["top5"]
    if [label for label, _ in got] != [label for label, _ in want] or any(
        abs(a[1] - b[1]) > 1e-5 for a, b in zip(got, want)
    ):
        raise AssertionError(f"{folder}: the pipeline's top 5 {got} differ from {want}")
    return f"top 5 == with agent_hf ({got[0][0]!r} first)"


def check_classification_handler(folder: str, expected: dict) -> str:
    """The folder's Inference Endpoints handler (`handler.py`, as the endpoint toolkit loads it) answers a base64
    request with the pipeline's top 5 and refuses a server file's path without reading it."""
    import base64
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"handler_{abs(hash(folder))}", f"{folder}/handler.py")
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    endpoint = handler.EndpointHandler(folder)
    with open(f"{folder}/image.png", "rb") as file:
        encoded = base64.b64encode(file.read()).decode("ascii")
    got = [p["label"] for p in endpoint({"inputs": encoded, "parameters": {"top_k": 5}})]
    if got != [label for label, _ in expected["top5"]]:
        raise AssertionError(f"{folder}: the handler's top 5 {got} differ from {expected['top5']}")
    try:
        endpoint({"inputs": f"{folder}/image.png"})
    except ValueError as error:
        if "file paths are not accepted" not in str(error):
            raise
    else:
        raise AssertionError(f"{folder}: the handler read a server file a request named")
    return "top 5 == pipeline; a server path refused"


# Checks run on every segmentation folder in every venv: (name, function(folder, expected outputs) -> one-line
# summary).
FOLDER_CHECKS = [
    ("logits", check_logits),
    ("base model", check_base_model),
    ("backbone", check_backbone),
    ("pipeline", check_pipeline),
]
# Checks run on the image-classification folders (`expected["task"] == "image-classification"`).
CLASSIFICATION_FOLDER_CHECKS = [
    ("classifier logits", check_classifier_logits),
    ("classification pipeline", check_classification_pipeline),
    ("classification handler", check_classification_handler),
]


def worker(names: list[str]) -> None:
    import importlib.abc

    class BlockAgentHF(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "agent_hf" or name.startswith("agent_hf."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by compat_check)")

    sys.meta_path.insert(0, BlockAgentHF())
    import torch
    import transformers

    for name in names:
        expected = torch.load(Path(name) / "expected.pt")
        checks = CLASSIFICATION_FOLDER_CHECKS if expected.get("task") == "image-classification" else FOLDER_CHECKS
        for check_name, check in checks:
            print(
                f"  transformers {transformers.__version__} {name}: {check_name}: {check(name, expected)}", flush=True
            )
    assert "agent_hf" not in sys.modules


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", nargs="+", default=list(DEFAULT_VERSIONS), help="transformers versions")
    parser.add_argument("--parity_version", default=DEFAULT_PARITY_VERSION, help="floor: parity subset runs here")
    parser.add_argument(
        "--common_tests_versions",
        nargs="*",
        default=list(DEFAULT_COMMON_TESTS_VERSIONS),
        help="those of --versions where transformers' common model tests run",
    )
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)

    start = time.perf_counter()
    names = write_folders(WORK_DIR)
    write_shipped_package(SHIPPED_DIR, [WORK_DIR / f"{family}-current" for family in FAMILIES])
    print(f"compat_check: folders written ({time.perf_counter() - start:.0f} s)", flush=True)
    for version in args.versions:
        step = time.perf_counter()
        with_package = version == args.parity_version
        python = ensure_venv(version, with_package=with_package)
        check_folders_in(python, names, WORK_DIR)
        checked = "shipped code OK"
        if version in args.common_tests_versions:
            run_common_tests_in(python, with_package)
            checked += f", transformers' common tests OK (on {'agent_hf' if with_package else SHIPPED_PACKAGE})"
        print(f"compat_check: transformers {version}: {checked} ({time.perf_counter() - step:.0f} s)", flush=True)
    if args.parity_version:
        step = time.perf_counter()
        python = ensure_venv(args.parity_version, with_package=True)
        run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_parity.py"], cwd=REPO_ROOT)
        print(f"compat_check: transformers {args.parity_version}: parity OK ({time.perf_counter() - step:.0f} s)")
    print(f"compat_check: all OK in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
