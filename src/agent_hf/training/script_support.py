"""What a training script does around its work: parsing its argument dataclasses, logging, and the launch checks.

* :class:`ArgumentDataclassParser` / :func:`parse_argument_dataclasses`: transformers' ``HfArgumentParser`` with
  one-line errors, the names of the options given explicitly (they override a recipe), a JSON file of arguments, and
  ``bool | None`` options given bare; :func:`short_help`: a ``--help`` of the script's own options and the most used
  ``TrainingArguments`` ones.
* :func:`setup_logging`: one line per phase on the main process; transformers' and datasets' logs with ``verbose``.
* :func:`use_cpu_processes_without_accelerator` / :func:`check_world_size`: several processes under ``torchrun`` or
  ``accelerate launch`` form one run, on a machine without GPU too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import datasets
import torch
import transformers
from transformers import HfArgumentParser, TrainingArguments

from ..argument_checks import ScriptError

__all__ = [
    "ArgumentDataclassParser",
    "check_world_size",
    "parse_argument_dataclasses",
    "setup_logging",
    "short_help",
    "use_cpu_processes_without_accelerator",
]

logger = logging.getLogger(__name__)


class ArgumentDataclassParser(HfArgumentParser):
    """An ``HfArgumentParser`` whose errors are one line, not argparse's usage text of every option."""

    def error(self, message: str):
        raise ScriptError(message)


def _bare_flags_to_true(argv: Sequence[str], bare_flags: Sequence[str]) -> list[str]:
    result = []
    for position, token in enumerate(argv):
        result.append(token)
        if token in bare_flags and (position + 1 == len(argv) or argv[position + 1].startswith("--")):
            result.append("True")
    return result


def parse_argument_dataclasses(
    parser: HfArgumentParser,
    argv: Sequence[str],
    *,
    bare_flags: Sequence[str] = (),
    renamed: dict[str, str] | None = None,
) -> tuple[tuple[Any, ...], set[str]]:
    """Parses ``argv`` (or the JSON file that is its only element) into the parser's dataclasses.

    Args:
        parser: the parser of the script's dataclasses.
        argv: the command line.
        bare_flags: ``bool | None`` options that may be given without a value (as in transformers' examples).
        renamed: ``{older name: name}`` of options, for the keys of a JSON file.

    Returns:
        ``(the dataclasses, the names of the options given explicitly)``.

    Raises:
        ScriptError: an unreadable JSON file, or a value the dataclasses refuse (``TrainingArguments``' own checks).
    """
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            with open(os.path.abspath(argv[0])) as file:
                values = json.load(file)
            for old, new in (renamed or {}).items():
                if old in values:
                    values[new] = values.pop(old)
            return parser.parse_dict(values), set(values)
        argv = _bare_flags_to_true(argv, bare_flags)
        dests = {option: action.dest for action in parser._actions for option in action.option_strings}
        explicit = {dests[token.split("=", 1)[0]] for token in argv if token.split("=", 1)[0] in dests}
        return parser.parse_args_into_dataclasses(args=argv), explicit
    except (OSError, ValueError) as error:
        raise ScriptError(str(error)) from error


def short_help(
    dataclass_types: Sequence[type], training_options: Sequence[str], training_title: str, **parser_kwargs: Any
) -> str:
    """The grouped ``--help`` text: the script's own dataclasses, then the ``TrainingArguments`` options named in
    ``training_options`` (in a group titled ``training_title``); ``parser_kwargs`` go to ``argparse``."""
    parser = HfArgumentParser(
        dataclass_types,
        formatter_class=lambda prog: argparse.HelpFormatter(prog, width=119, max_help_position=40),
        **parser_kwargs,
    )
    group = parser.add_argument_group(training_title)
    fields = {f.name: f for f in dataclasses.fields(TrainingArguments)}
    for name in training_options:
        help_text = " ".join(fields[name].metadata.get("help", "").split()).replace("%", "%%")
        if isinstance(fields[name].default, bool):
            group.add_argument(f"--{name}", help=help_text, action="store_true")
        else:
            group.add_argument(f"--{name}", help=help_text, metavar=name.upper())
    return parser.format_help()


def setup_logging(training_args: TrainingArguments, verbose: bool = False, *loggers: logging.Logger) -> None:
    """agent_hf (and ``loggers``, the script's) say one line per phase (info) on the main process; transformers and
    datasets only warn, unless ``verbose`` (their configs, the Trainer's settings, datasets' progress bars) or
    ``--log_level``."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log and verbose:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    own_level = min(log_level, logging.INFO) if training_args.should_log else log_level
    for own in (*loggers, logging.getLogger("agent_hf")):
        own.setLevel(own_level)
    datasets.utils.logging.set_verbosity(log_level)
    # datasets' bars ("Generating train split", on every process) say what the "Data: ..." line says once.
    datasets.enable_progress_bars() if verbose else datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    logger.info(
        f"Process rank: {training_args.process_index}, world size: {training_args.world_size}, "
        f"device: {training_args.device}, distributed: {training_args.parallel_mode.value == 'distributed'}"
    )


def use_cpu_processes_without_accelerator() -> None:
    """Under ``torchrun --nproc_per_node N`` or ``accelerate launch --multi_gpu --num_processes N`` on a machine
    without GPU, accelerate only forms a (gloo) process group when told to use the CPU; without this every process
    would silently train on its own."""
    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator:
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def check_world_size(world_size: int) -> None:
    """Stops a run whose launched processes the Trainer does not see as one run (``world_size``: the Trainer's)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != world_size:
        raise ScriptError(
            f"launched {launched} processes but the Trainer sees a world size of {world_size}: the "
            "processes would train independently (on CPU pass --use_cpu)"
        )
