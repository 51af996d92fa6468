"""Train the Transformer with the paper's recipe (Section 5) on the Bible EN-ES corpus or any
parallel corpus; every option of `vanilla_transformer.recipe.training.TrainingConfig` is a flag.

Examples:
    python scripts/train.py --preset cpu-small --output_dir runs/cpu-small
    python scripts/train.py --preset cpu-small --max_train_minutes 5 --eval_steps 0
    python scripts/train.py --config my_run.yaml --lr_factor 0.5       # flags override the file
    python scripts/train.py --output_dir runs/cpu-small --resume_from_checkpoint latest
    accelerate launch --num_processes 2 --cpu scripts/train.py --preset cpu-small
    accelerate launch scripts/train.py --preset base --mixed_precision bf16   # on GPUs

Precedence: field defaults < --preset < --config file < explicit flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing

from vanilla_transformer.recipe.training import (
    PRESETS,
    NonFiniteLossError,
    TrainingConfig,
    load_config_file,
    resolve_config,
    train,
)


def _flag_type(field: dataclasses.Field):
    """The argparse type of a dataclass field annotated as a string (`from __future__`)."""
    hint = typing.get_type_hints(TrainingConfig)[field.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", default=None, help="YAML or JSON file of options (names as the flags)."
    )
    for field in dataclasses.fields(TrainingConfig):
        kind = _flag_type(field)
        help_text = f"{field.metadata['help']} (default: {field.default})"
        # default=SUPPRESS: only flags given on the command line override preset and file.
        common = {"default": argparse.SUPPRESS, "help": help_text}
        if field.name == "preset":
            parser.add_argument("--preset", choices=sorted(PRESETS), **common)
        elif kind is bool:
            parser.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction, **common)
        else:
            parser.add_argument(f"--{field.name}", type=kind, **common)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = vars(parse_args(argv))
    file_values = load_config_file(args.pop("config")) if args.get("config") else {}
    args.pop("config", None)
    config = resolve_config(file_values=file_values, **args)
    try:
        summary = train(config)
    except NonFiniteLossError as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 3
    print(json.dumps({k: summary.get(k) for k in ("steps", "stop_reason", "hub_folder")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
