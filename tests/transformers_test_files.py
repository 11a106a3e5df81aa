"""transformers' own model test mixins, taken from the test files of the INSTALLED transformers.

The transformers wheel has no tests; its sdist on PyPI has the top-level `tests/*.py` of the release
(`test_modeling_common.py`, `test_backbone_common.py`, `test_configuration_common.py`, ...). On first use
`load_transformers_tests()` downloads that sdist with pip (`pip download --no-binary :all: --no-deps
transformers==<installed>`), extracts its `tests/` into `.cache/transformers-tests/<version>/transformers_tests`
(git-ignored; never copied into the repository) and imports it as the package `transformers_tests`. Later runs reuse
the extracted folder.

The sdist leaves out `tests/__init__.py` (empty in the repository: an empty one is written) and the subfolders of
`tests/`, three modules of which the common files import at module level. They get stand-ins here, used only where
the sdist lacks the module (see `stand_in_modules()`):

- `exporters/test_export.py` (`ExportTesterMixin`, the base class of `ModelTesterMixin`): an empty mixin, so the
  export tests of that file (torch.export/ONNX/ExecuTorch exporters) do not run;
- `generation/test_utils.py` (`GenerationTesterMixin`): an empty class, which `ModelTesterMixin` only uses to check
  that a model that cannot generate does not inherit it (ours cannot generate);
- `utils/test_configuration_utils.py` (`config_common_kwargs`): `PreTrainedConfig`'s own arguments with non-default
  values, built from the installed `PreTrainedConfig` by `common_config_kwargs()`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
import warnings
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_ROOT = REPO_ROOT / ".cache" / "transformers-tests"
# A name of its own (not `tests`), so that the project's `tests/` folder and transformers' never mix.
PACKAGE = "transformers_tests"


class TransformersTestsUnavailable(RuntimeError):
    """transformers' test files could not be fetched or imported."""


def installed_transformers_version() -> str:
    return importlib.metadata.version("transformers")


def download_sdist(version: str, destination: Path) -> Path:
    """The sdist `transformers-<version>.tar.gz`, downloaded by pip into `destination`."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-binary",
        ":all:",
        "--no-deps",
        "--disable-pip-version-check",
        f"transformers=={version}",
        "--dest",
        str(destination),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    archives = sorted(destination.glob("transformers-*.tar.gz"))
    if result.returncode or not archives:
        output = (result.stdout + result.stderr).strip()[-2000:]
        raise TransformersTestsUnavailable(
            f"cannot download the sdist of transformers {version} from PyPI, which holds transformers' own test files "
            f"(command: {' '.join(command)}; exit status {result.returncode}):\n{output}\n"
            "The common model tests need it once (it is cached in .cache/transformers-tests/); check the network "
            "access to PyPI (or pip's index settings) and run again."
        )
    return archives[0]


def extract_tests(archive: Path, destination: Path) -> None:
    """The `tests/` folder of the sdist `archive` (`transformers-<version>/tests/...`), extracted as `destination`."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and len(Path(m.name).parts) >= 3]
        members = [m for m in members if Path(m.name).parts[1] == "tests" and ".." not in Path(m.name).parts]
        if not members:
            raise TransformersTestsUnavailable(f"{archive.name} has no tests/ folder; cannot run the common tests")
        work = Path(tempfile.mkdtemp(dir=destination.parent))
        try:
            for member in members:
                target = work.joinpath(*Path(member.name).parts[2:])
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, open(target, "wb") as file:
                    shutil.copyfileobj(source, file)
            # The repository's tests/__init__.py is empty and the sdist leaves it out; test_configuration_common.py
            # executes it (`direct_transformers_import(Path(__file__).parent)`), and it makes the folder a package.
            work.joinpath("__init__.py").touch()
            # Renamed into place at once: a concurrent run sees either nothing or the whole folder.
            os.rename(work, destination)
        except OSError:
            if not destination.is_dir():  # (a concurrent run that renamed its folder first is fine)
                raise
        finally:
            shutil.rmtree(work, ignore_errors=True)


def transformers_tests_dir(version: str) -> Path:
    """`.cache/transformers-tests/<version>/transformers_tests`, downloaded and extracted on first use."""
    root = CACHE_ROOT / version
    package_dir = root / PACKAGE
    if package_dir.is_dir():
        return package_dir
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as download:
        extract_tests(download_sdist(version, Path(download)), package_dir)
    return package_dir


def common_config_kwargs() -> dict:
    """`PreTrainedConfig`'s own arguments (those the installed version sets as attributes), each with a value other
    than its default: `ConfigTester.check_config_arguments_init` checks that a config class passes them through."""
    import transformers

    # (`PretrainedConfig` on 4.x; 5.x keeps that name as an alias.)
    config_class = getattr(transformers, "PreTrainedConfig", None) or transformers.PretrainedConfig
    candidates = {
        "return_dict": False,
        "output_hidden_states": True,
        "output_attentions": True,
        "torchscript": True,
        "dtype": "float16",
        "chunk_size_feed_forward": 5,
        "architectures": ["AgentSwinModel"],
        "finetuning_task": "segmentation",
        "id2label": {0: "label"},
        "label2id": {"label": 0},
        "problem_type": "regression",
        "tie_word_embeddings": False,
        "pruned_heads": {"a": 1},
        "tokenizer_class": "BertTokenizerFast",
        "prefix": "prefix",
        # transformers 4.x only: generation, decoder and TF arguments, which 5.0 moved out of the model config.
        "use_bfloat16": True,
        "tf_legacy_loss": True,
        "is_decoder": True,
        "add_cross_attention": True,
        "cross_attention_hidden_size": 24,
        "tie_encoder_decoder": True,
        "max_length": 31,
        "min_length": 2,
        "do_sample": True,
        "early_stopping": True,
        "num_beams": 4,
        "num_beam_groups": 2,
        "diversity_penalty": 0.25,
        "temperature": 0.5,
        "top_k": 7,
        "top_p": 0.9,
        "typical_p": 0.6,
        "repetition_penalty": 1.5,
        "length_penalty": 2.0,
        "no_repeat_ngram_size": 2,
        "encoder_no_repeat_ngram_size": 3,
        "bad_words_ids": [[4], [5, 6]],
        "num_return_sequences": 2,
        "output_scores": True,
        "return_dict_in_generate": True,
        "forced_bos_token_id": 1,
        "forced_eos_token_id": 2,
        "remove_invalid_values": True,
        "exponential_decay_length_penalty": (4, 1.5),
        "suppress_tokens": [3],
        "begin_suppress_tokens": [4],
        "bos_token_id": 11,
        "pad_token_id": 12,
        "eos_token_id": 13,
        "sep_token_id": 14,
        "decoder_start_token_id": 15,
        "task_specific_params": {"segmentation": {"size": 512}},
    }
    defaults = config_class()
    attributes = {name.lstrip("_") for name in vars(defaults)}
    kwargs = {name: value for name, value in candidates.items() if name in attributes}
    same = [name for name, value in kwargs.items() if name != "dtype" and getattr(defaults, name) == value]
    if same:
        raise TransformersTestsUnavailable(f"common_config_kwargs: {same} are the defaults of {config_class.__name__}")
    return kwargs


def stand_in_modules() -> dict[str, dict]:
    """Module name (relative to the package) -> the names it defines, for the modules the sdist lacks."""

    class ExportTesterMixin:
        """Stand-in: the sdist has no tests/exporters/test_export.py, so its export tests do not run."""

    class GenerationTesterMixin:
        """Stand-in: the sdist has no tests/generation/test_utils.py; these models cannot generate."""

    return {
        "exporters.test_export": {"ExportTesterMixin": ExportTesterMixin},
        "generation.test_utils": {"GenerationTesterMixin": GenerationTesterMixin},
        "utils.test_configuration_utils": {"config_common_kwargs": common_config_kwargs()},
    }


def install_stand_ins(package_dir: Path) -> list[str]:
    """Registers a stand-in for each module of `stand_in_modules()` that `package_dir` lacks. Returns their names."""
    installed = []
    for name, attributes in stand_in_modules().items():
        parts = name.split(".")
        if package_dir.joinpath(*parts[:-1], parts[-1] + ".py").is_file():
            continue
        for depth in range(1, len(parts)):  # the parent packages, when the sdist lacks them too
            parent = ".".join([PACKAGE, *parts[:depth]])
            if parent not in sys.modules and not package_dir.joinpath(*parts[:depth]).is_dir():
                module = types.ModuleType(parent)
                module.__path__ = []
                sys.modules[parent] = module
        module = types.ModuleType(f"{PACKAGE}.{name}")
        module.__dict__.update(attributes)
        sys.modules[module.__name__] = module
        installed.append(name)
    return installed


def load_transformers_tests() -> types.SimpleNamespace:
    """transformers' test modules of the installed version: `modeling` (`test_modeling_common`), `backbone`
    (`test_backbone_common`), `configuration` (`test_configuration_common`), and `stand_ins` (the names of the
    modules replaced by stand-ins). Raises `TransformersTestsUnavailable` with the reason when they cannot be had."""
    version = installed_transformers_version()
    try:
        import parameterized  # noqa: F401  (a test-only dependency of transformers' test files)
    except ImportError:
        raise TransformersTestsUnavailable(
            "transformers' test files need the package `parameterized`: pip install -e '.[test]'"
        ) from None
    package_dir = transformers_tests_dir(version)
    if str(package_dir.parent) not in sys.path:
        sys.path.insert(0, str(package_dir.parent))
    stand_ins = install_stand_ins(package_dir)
    try:
        with warnings.catch_warnings():
            # transformers registers its pytest marks (flash_attn_test, ...) in its own pyproject.toml.
            warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
            modules = {
                key: importlib.import_module(f"{PACKAGE}.{name}")
                for key, name in (
                    ("modeling", "test_modeling_common"),
                    ("backbone", "test_backbone_common"),
                    ("configuration", "test_configuration_common"),
                )
            }
    except ImportError as error:
        raise TransformersTestsUnavailable(
            f"cannot import transformers {version}'s test files from {package_dir}: {error}"
        ) from error
    return types.SimpleNamespace(
        **modules, stand_ins=stand_ins, version=version, package_dir=package_dir, unavailable=None
    )


def unavailable_transformers_tests(reason: str) -> types.SimpleNamespace:
    """What `load_transformers_tests()` returns in place of the test modules when they cannot be had: mixins whose
    one test fails with `reason` (`unavailable`), so that the test file fails without stopping the rest of the suite
    (a collection error would)."""

    class Unavailable:
        def test_transformers_test_files(self):
            pytest.fail(reason, pytrace=False)

    mixins = types.SimpleNamespace(ModelTesterMixin=Unavailable, BackboneTesterMixin=Unavailable, ConfigTester=None)
    return types.SimpleNamespace(
        modeling=mixins, backbone=mixins, configuration=mixins, stand_ins=[], unavailable=reason
    )
