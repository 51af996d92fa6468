"""Train the Transformer with the paper's recipe (Section 5) on the Bible EN-ES corpus or any
parallel corpus; every option of `vanilla_transformer.recipe.training.TrainingConfig` is a flag.

Examples:
    python scripts/train.py --preset cpu-small --output_dir runs/cpu-small
    python scripts/train.py --preset cpu-small --max_train_minutes 5 --eval_steps 0
    python scripts/train.py --config my_run.yaml --lr_factor 0.5       # flags override the file
    python scripts/train.py --preset cpu-small --output_dir runs/cpu-small --resume_from_checkpoint latest
    torchrun --nproc_per_node 2 scripts/train.py --preset cpu-small   # 2 CPU processes (gloo)
    accelerate launch --multi_gpu --num_processes 8 scripts/train.py --preset big --mixed_precision bf16

Precedence: field defaults < --preset < --config file < explicit flags. With
--resume_from_checkpoint the run's own training_config.json replaces the defaults and the preset,
so `--output_dir DIR --resume_from_checkpoint latest` needs no other flag; a flag that changes the
data order or the model (seed, batch sizes, dataset, tokenizer, model shape) is refused unless
--override_resume_options.

Ctrl-C (SIGINT) or SIGTERM saves a checkpoint at the next update boundary and exits (130 / 143).
A run that fails to start (bad option or config file, nothing to resume, missing data) leaves no
new run folder behind.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

import yaml
from accelerate import PartialState

from vanilla_transformer.errors import UserError, console_tool
from vanilla_transformer.recipe.checkpoints import complete_checkpoints, resolve_checkpoint
from vanilla_transformer.recipe.options import parse_cli
from vanilla_transformer.recipe.run_folder import RunLockedError
from vanilla_transformer.recipe.training import (
    NonFiniteLossError,
    TrainingConfig,
    TrainingInterrupted,
    default_output_dir,
    load_config_file,
    load_run_config,
    resolve_config,
    train,
)


def parse_args(argv: list[str] | None = None) -> dict:
    """The options given on the command line only (they override the preset and the file)."""
    (given,) = parse_cli(
        [TrainingConfig],
        argv,
        __doc__,
        extra_arguments=[
            ("--config", {"help": "YAML or JSON file of options (names as the flags)."})
        ],
        only_given=True,
    )
    return given


def configure(args: dict) -> TrainingConfig:
    """The run's options (defaults < preset < --config file < flags; a resumed run's own), every
    problem a `UserError` raised before anything is written."""
    config_file = args.pop("config", None)
    try:
        file_values = load_config_file(config_file) if config_file else {}
    except FileNotFoundError:
        raise UserError(f"--config {config_file}: no such file.") from None
    except (ValueError, yaml.YAMLError) as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"--config {config_file} is not a valid YAML/JSON file: {first}") from None
    saved = None
    if args.get("resume_from_checkpoint"):
        output_dir = args.get("output_dir") or file_values.get("output_dir")
        preset = args.get("preset") or file_values.get("preset")
        saved = load_run_config(output_dir or default_output_dir(preset))
    try:
        config = resolve_config(file_values=file_values, saved_values=saved, **args)
    except (ValueError, TypeError) as err:
        where = f" (in --config {config_file})" if config_file else ""
        raise UserError(f"{err}{where}") from None
    check_resume_target(config)
    return config


def check_resume_target(config: TrainingConfig) -> None:
    """--resume_from_checkpoint needs a finished checkpoint: refused before the run folder is made."""
    which = config.resume_from_checkpoint
    if not which:
        return
    try:
        resolve_checkpoint(config.output_dir, which)
    except FileNotFoundError as err:
        found = complete_checkpoints(config.output_dir)
        hint = (
            f"finished checkpoints there: {[p.name for p in found]}"
            if found
            else (
                "start without --resume_from_checkpoint, or pass the --output_dir of an earlier run"
            )
        )
        raise UserError(f"nothing to resume: {err}; {hint}.") from None


@console_tool
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    config = configure(args)
    run_dir = Path(config.output_dir)
    new_folder = not run_dir.exists()
    try:
        summary = train(config)
    except NonFiniteLossError as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 3
    except TrainingInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}.get(
            err.signal_name, 1
        )
    except Exception as err:
        if new_folder and not isinstance(err, RunLockedError) and not complete_checkpoints(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)  # a failed start leaves nothing behind
        raise
    if PartialState().is_main_process:  # one result line, not one per process
        print(json.dumps({k: summary.get(k) for k in ("steps", "stop_reason", "hub_folder")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
