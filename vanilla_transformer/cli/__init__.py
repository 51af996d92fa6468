"""The console tools (`vanilla-transformer-*`), one module each, each `main(argv=None)` with the one
error style of `vanilla_transformer.errors`. No tool imports another; what two tools share lives
here or lower."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..errors import UserError


def check_output_folder(
    output_dir: str | Path, inputs: Iterable[str | Path], overwrite: bool, what: str
) -> Path:
    """Refuse, before any work, a folder a tool would write into that is one of its `inputs`,
    inside one or holding one (it would overwrite what it reads), a file, or a non-empty folder
    without `overwrite` (the tool empties it when it writes). `what` says what an earlier write
    there was (e.g. "an earlier average"), for the message."""
    output_dir = Path(output_dir)
    out = output_dir.resolve()
    for given in inputs:
        path = Path(given).resolve()
        if out == path or out in path.parents or path in out.parents:
            raise UserError(
                f"--output_dir {output_dir} would overwrite the input {given}; choose another folder."
            )
    if output_dir.is_file():
        raise UserError(f"--output_dir {output_dir} is a file; pass a folder.")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not overwrite:
            raise UserError(
                f"{output_dir} already holds files ({what}?); pass --overwrite_output_dir to "
                "replace them, or choose another --output_dir."
            )
    return output_dir
