"""Export a trained model folder to CTranslate2 or ONNX.

    python scripts/export.py runs/cpu-small/hub exported/ct2 --format ctranslate2 --quantization int8
    python scripts/export.py runs/cpu-small/hub exported/onnx --format onnx

Needs the export extra: pip install -e '.[export]'. See docs/deployment.md.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from vanilla_transformer.cli import check_output_folder
from vanilla_transformer.errors import DEBUG_FLAG, DEBUG_HELP, console_tool
from vanilla_transformer.recipe.checkpoints import not_on_the_hub, resolve_model_folder

FORMATS = ("ctranslate2", "onnx")
logger = logging.getLogger("vanilla_transformer.export")


def build_parser() -> argparse.ArgumentParser:
    from vanilla_transformer.export.ctranslate2 import QUANTIZATIONS

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="A saved model folder (save_pretrained) or Hub id.")
    parser.add_argument(
        "output_dir",
        help="Folder to write the exported model into: new or empty (see --overwrite_output_dir).",
    )
    parser.add_argument(
        "--format", choices=FORMATS, required=True, help="Target runtime: %(choices)s."
    )
    parser.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        default="float32",
        help="CTranslate2 weight type (int8 is about 4x smaller and faster on CPU). ONNX exports "
        "are float32 only.",
    )
    parser.add_argument(
        "--tokenizer", default=None, help="Tokenizer folder or Hub id (default: the model's)."
    )
    parser.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Empty a non-empty output_dir first instead of refusing (never the model folder).",
    )
    parser.add_argument(DEBUG_FLAG, action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.format == "onnx" and args.quantization != "float32":
        parser.error(f"--quantization {args.quantization} applies to --format ctranslate2 only.")
    return args


def prepare_output_dir(args: argparse.Namespace) -> Path:
    """A new or empty output folder (emptied with --overwrite_output_dir); never the model's."""
    output_dir = check_output_folder(
        args.output_dir, [args.model], args.overwrite_output_dir, "another export"
    )
    if output_dir.is_dir():
        shutil.rmtree(output_dir)
    return output_dir


@console_tool(log_format="%(message)s")
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    folder = resolve_model_folder(args.model)
    output_dir = prepare_output_dir(args)  # refused or emptied before any work
    print(f"loading {folder}", flush=True)
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    except OSError as err:
        if Path(folder).is_dir():
            raise
        raise not_on_the_hub(folder, err) from None
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or folder)
    if args.format == "ctranslate2":
        from vanilla_transformer.export.ctranslate2 import export_ctranslate2

        print(f"converting to CTranslate2 ({args.quantization})", flush=True)
        written = export_ctranslate2(model, tokenizer, output_dir, args.quantization)
    else:
        from vanilla_transformer.export.onnx import export_onnx

        written = export_onnx(model, tokenizer, output_dir)
    print(f"wrote the {args.format} model to {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
