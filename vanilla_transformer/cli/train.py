"""Train the Transformer with the paper's recipe (Section 5) on the Bible EN-ES corpus or any
parallel corpus; every option of `vanilla_transformer.recipe.training.TrainingConfig` is a flag.

Examples:
    python scripts/train.py --preset cpu-small --output_dir runs/cpu-small
    python scripts/train.py --preset cpu-small --max_train_minutes 5 --eval_steps 0
    python scripts/train.py --config my_run.yaml --lr_factor 0.5       # flags override the file
    python scripts/train.py --preset cpu-small --output_dir runs/cpu-small --resume_from_checkpoint latest
    accelerate launch --num_processes 2 --cpu scripts/train.py --preset cpu-small
    accelerate launch scripts/train.py --preset base --mixed_precision bf16   # on GPUs

Precedence: field defaults < --preset < --config file < explicit flags. With
--resume_from_checkpoint the run's own training_config.json replaces the defaults and the preset,
so `--output_dir DIR --resume_from_checkpoint latest` needs no other flag; a flag that changes the
data order or the model (seed, batch sizes, dataset, tokenizer, model shape) is refused unless
--override_resume_options.

Ctrl-C (SIGINT) or SIGTERM saves a checkpoint at the next update boundary and exits (130 / 143).
"""

from __future__ import annotations

import json
import logging
import signal
import sys

from accelerate import PartialState

from vanilla_transformer.recipe.options import parse_cli
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Startup facts (parameters, pairs kept by each filter, batching, checkpoints saved/resumed)
    # are INFO records of the package's loggers; accelerate's logger shows them on the main process.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    file_values = load_config_file(args.pop("config")) if args.get("config") else {}
    args.pop("config", None)
    saved = None
    if args.get("resume_from_checkpoint"):
        output_dir = args.get("output_dir") or file_values.get("output_dir")
        preset = args.get("preset") or file_values.get("preset")
        saved = load_run_config(output_dir or default_output_dir(preset))
    config = resolve_config(file_values=file_values, saved_values=saved, **args)
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
    if PartialState().is_main_process:  # one result line, not one per process
        print(json.dumps({k: summary.get(k) for k in ("steps", "stop_reason", "hub_folder")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
