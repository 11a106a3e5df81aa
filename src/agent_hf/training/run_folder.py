"""A training run's output folder: where the run writes, whether it resumes, and the trained model saved into it.

* A run into a folder that holds its checkpoints resumes from the newest complete one (half-written checkpoints are
  skipped and named); any other non-empty folder is refused unless ``overwrite``, which trains into a staging folder
  beside it, swapped in when the model is saved (never replacing a folder that holds an input or the current
  directory). An evaluation-only run adds its result files to the folder (replacing earlier ones only with
  ``overwrite``).
* :func:`save_trained_model` writes the model folder with its provenance (trained from what, on what, how) as soon as
  training ends; :func:`agent_hf.provenance.add_eval_results` adds the measured results after evaluation.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..argument_checks import ScriptError, check_eval_results, folder_error, user_errors
from ..output_folders import (
    OutputFolderError,
    add_files,
    check_output_folder,
    new_staging_folder,
    recover_leftovers,
    replace_folder,
)
from ..provenance import record_provenance, trained_provenance
from ..saving import save_model_folder
from .checkpoints import CheckpointScan, checkpoint_problem, scan_checkpoints

__all__ = ["OutputPlan", "evaluates_own_folder", "plan_output", "save_trained_model"]

logger = logging.getLogger(__name__)


@dataclass
class OutputPlan:
    """Where the run writes.

    Attributes:
        output_dir: where the results end up (``--output_dir``).
        run_dir: where the Trainer writes checkpoints and results: ``output_dir``, or (``overwrite`` on a non-empty
            folder) a staging folder beside it that replaces it once the model is saved.
        resume_from: the checkpoint to resume from, if any.
        inputs: local paths the run reads (never replaced).
    """

    output_dir: Path
    run_dir: Path
    resume_from: str | None
    inputs: list[str]

    @property
    def staged(self) -> bool:
        return self.run_dir != self.output_dir


def _local_paths(candidates: Iterable[str | None]) -> list[str]:
    return [path for path in candidates if path and os.path.exists(path)]


def _wants_last_checkpoint(value: str | None) -> bool:
    return isinstance(value, str) and value.lower() in ("true", "last")


def _describe_partial(partial: list[tuple[Path, str]]) -> str:
    return "; ".join(f"{folder.name} ({problem})" for folder, problem in partial)


def _skipped_message(scan: CheckpointScan, chosen: Path | None) -> str:
    skipped = scan.skipped_after(chosen)
    return f" Skipped incomplete checkpoint(s): {_describe_partial(skipped)}" if skipped else ""


def _resolve_resume(value: str | None, scan: CheckpointScan, output_dir: Path) -> str | None:
    """The checkpoint that ``--resume_from_checkpoint`` names: ``True``/``last`` is the newest complete one."""
    if value is None or value.lower() == "false":
        return None
    if _wants_last_checkpoint(value):
        if scan.last is None:
            partial = f" (incomplete: {_describe_partial(scan.partial)})" if scan.partial else ""
            raise ScriptError(f"--resume_from_checkpoint {value}: {output_dir} holds no complete checkpoint{partial}")
        logger.warning(
            f"Resuming from {scan.last}, the newest complete checkpoint.{_skipped_message(scan, scan.last)}"
        )
        return str(scan.last)
    if not os.path.isdir(value):
        raise ScriptError(f"--resume_from_checkpoint {value}: no such folder")
    problem = checkpoint_problem(value)
    if problem:
        newest = f"; the newest complete one is {scan.last}" if scan.last else ""
        raise ScriptError(f"--resume_from_checkpoint {value} is not a complete checkpoint: {problem}{newest}")
    return value


def _agreed_staging_name(output_dir: Path, process_index: int) -> str:
    """A staging folder name that every process of the run uses (chosen by process 0)."""
    name = [new_staging_folder(output_dir).name if process_index == 0 else None]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast_object_list(name, src=0)
    return name[0]


def plan_output(
    output_dir: str | os.PathLike,
    *,
    do_train: bool,
    overwrite: bool,
    resume_from_checkpoint: str | None,
    inputs: Iterable[str | None],
    process_index: int = 0,
) -> OutputPlan:
    """Decides, before anything is loaded, where the run writes and whether it resumes (see the module docstring).

    Args:
        output_dir: ``--output_dir``.
        do_train: whether the run trains (else it only evaluates).
        overwrite: ``--overwrite_output_dir``.
        resume_from_checkpoint: ``--resume_from_checkpoint`` (a folder, ``True``/``last``, ``False`` or ``None``).
        inputs: what the run reads (model, config, processor, checkpoint, data): the local paths among them are never
            replaced.
        process_index: this process's index (process 0 recovers a killed run's leftovers and names the staging
            folder).

    Raises:
        ScriptError: a folder the run may not write, or a checkpoint it cannot resume.
    """
    output_dir = Path(output_dir)
    given = list(inputs)
    resume_arg = resume_from_checkpoint
    inputs = _local_paths([*given, None if _wants_last_checkpoint(resume_arg) else resume_arg])
    if not do_train:  # evaluation only: adds its result files next to whatever is there
        check_eval_results(output_dir, overwrite)
        return OutputPlan(output_dir, output_dir, None, inputs)
    try:
        # Not a file, not the current directory, not holding or inside the data or the model.
        check_output_folder(output_dir, overwrite=True, inputs=_local_paths(given))
    except OutputFolderError as error:
        if error.reason != "current_directory" or overwrite:
            raise folder_error(error) from error
    if process_index == 0:
        recover_leftovers(output_dir)  # of a killed run; before any process makes its staging folder
    scan = scan_checkpoints(output_dir)
    if overwrite:
        if _wants_last_checkpoint(resume_arg):
            raise ScriptError("--overwrite_output_dir starts the run over: it cannot also resume its last checkpoint")
        resume = _resolve_resume(resume_arg, scan, output_dir)
        try:
            check_output_folder(output_dir, overwrite=True, inputs=inputs)
        except OutputFolderError as error:
            raise folder_error(error) from error
        if output_dir.is_dir() and any(output_dir.iterdir()):
            # The other processes' (and machines') copy; beside the folder a symbolic link points to.
            run_dir = new_staging_folder(output_dir, name=_agreed_staging_name(output_dir, process_index))
            logger.warning(f"Training into {run_dir}; it replaces {output_dir} once the model is saved")
            return OutputPlan(output_dir, run_dir, resume, inputs)
        return OutputPlan(output_dir, output_dir, resume, inputs)
    resume = _resolve_resume(resume_arg, scan, output_dir)
    if resume is None and scan.last is not None:
        logger.warning(
            f"Resuming from {scan.last}: {output_dir} holds this run's checkpoints (pass --overwrite_output_dir to "
            f"start over instead).{_skipped_message(scan, scan.last)}"
        )
        resume = str(scan.last)
    if resume is None and output_dir.is_dir() and any(output_dir.iterdir()):
        partial = f"; its checkpoints are incomplete: {_describe_partial(scan.partial)}" if scan.partial else ""
        raise ScriptError(
            f"output folder {output_dir} is not empty and holds no checkpoint to resume{partial}: choose another "
            "--output_dir, or pass --overwrite_output_dir to replace it"
        )
    return OutputPlan(output_dir, output_dir, resume, inputs)


def save_trained_model(trainer, plan: OutputPlan, image_processor, base: str, dataset: str) -> None:
    """Writes the trained model folder with its provenance (trained from ``base`` on ``dataset``) into the run
    folder (each file complete before it appears, ``config.json`` last), swaps a staged run folder in, and points the
    Trainer at the final output folder.

    Args:
        trainer: the :class:`~agent_hf.training.SegmentationTrainer` that trained the model.
        plan: the run's :class:`OutputPlan`.
        image_processor: the processor saved with the model.
        base: what training started from (a preset, a folder or a Hub id).
        dataset: the training data, as the model card names it.
    """
    provenance = trained_provenance(
        trainer.model,
        base=base,
        dataset=dataset,
        steps=trainer.state.global_step,
        recipe=dataclasses.asdict(trainer.recipe),
    )
    record_provenance(trainer.model, provenance)
    if trainer.args.should_save:
        with add_files(plan.run_dir) as staging:
            save_model_folder(trainer.model, staging, image_processor)
        if plan.staged:
            with user_errors(f"could not replace {plan.output_dir} (the run is complete in {plan.run_dir})"):
                replace_folder(plan.run_dir, plan.output_dir, overwrite=True, inputs=plan.inputs)
    trainer.accelerator.wait_for_everyone()
    trainer.args.output_dir = str(plan.output_dir)
    logger.info(f"Saved the trained model to {plan.output_dir}")


def evaluates_own_folder(model_name_or_path: str, output_dir: str | os.PathLike) -> bool:
    """Whether an evaluation-only run writes into the folder of the model it evaluates (its results then go into
    that folder's ``config.json``, for the model card)."""
    return os.path.isdir(model_name_or_path) and Path(model_name_or_path).resolve() == Path(output_dir).resolve()
