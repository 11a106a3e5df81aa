"""What the scripts share: user errors reported in one line, tracebacks only for the unexpected (or with ``--debug``).

Used by ``scripts/*.py``; part of the package, not of the model code shipped to the Hub.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

__all__ = ["ArgumentParser", "ScriptError", "folder_error", "pop_debug_flag", "run_script"]


class ScriptError(Exception):
    """A problem with the user's arguments, config, data or output folder: printed as ``error: <message>``."""


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are :class:`ScriptError` (one line, exit code 1)."""

    def error(self, message: str):
        raise ScriptError(message)


def folder_error(error: Exception, overwrite_flag: str = "--overwrite_output_dir") -> ScriptError:
    """The :class:`ScriptError` for an :class:`~agent_hf.folders.OutputFolderError`, naming the flag that allows
    replacing a folder that is merely not empty."""
    hint = f" ({overwrite_flag} replaces it)" if getattr(error, "reason", None) == "not_empty" else ""
    return ScriptError(f"{error}{hint}")


def pop_debug_flag(argv: Sequence[str]) -> tuple[list[str], bool]:
    """Removes a bare ``--debug`` (one not followed by a value) from ``argv``; returns ``(argv, found)``.

    ``TrainingArguments`` has a ``--debug OPTION`` of its own, which is left in place.
    """
    argv = list(argv)
    for position, token in enumerate(argv):
        if token == "--debug" and (position + 1 == len(argv) or argv[position + 1].startswith("-")):
            return argv[:position] + argv[position + 1 :], True
    return argv, os.environ.get("AGENT_HF_DEBUG", "").lower() in ("1", "true", "yes")


def run_script(main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> int:
    """Runs ``main(argv)`` and returns the exit code: 0, or 1 after printing a :class:`ScriptError` in one line.

    Unexpected exceptions propagate (with their traceback); with ``--debug`` (or ``AGENT_HF_DEBUG=1``) so do
    :class:`ScriptError`\\ s.
    """
    argv, debug = pop_debug_flag(sys.argv[1:] if argv is None else argv)
    try:
        main(argv)
    except ScriptError as error:
        if debug:
            raise
        rank = os.environ.get("RANK")
        prefix = f"[rank {rank}] " if rank is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        print(f"{prefix}error: {error}", file=sys.stderr, flush=True)
        return 1
    return 0
