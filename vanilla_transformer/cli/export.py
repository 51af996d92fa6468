"""Export a trained model folder to CTranslate2 or ONNX.

    python scripts/export.py runs/cpu-small/hub exported/ct2 --format ctranslate2 --quantization int8
    python scripts/export.py runs/cpu-small/hub exported/onnx --format onnx

Needs the export extra: pip install -e '.[export]'. See docs/deployment.md.
"""

from __future__ import annotations

import argparse
import logging

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)

FORMATS = ("ctranslate2", "onnx")
logger = logging.getLogger("vanilla_transformer.export")


def build_parser() -> argparse.ArgumentParser:
    from vanilla_transformer.export.ctranslate2 import QUANTIZATIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="A saved model folder (save_pretrained) or Hub id.")
    parser.add_argument("output_dir", help="Folder to write the exported model into.")
    parser.add_argument(
        "--format", choices=FORMATS, required=True, help="Target runtime: %(choices)s."
    )
    parser.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        default="float32",
        help="CTranslate2 weight type (default %(default)s; int8 is about 4x smaller and faster "
        "on CPU). ONNX exports are float32 only.",
    )
    parser.add_argument(
        "--tokenizer", default=None, help="Tokenizer folder or Hub id (default: the model's)."
    )
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.format == "onnx" and args.quantization != "float32":
        parser.error(f"--quantization {args.quantization} applies to --format ctranslate2 only.")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    if args.format == "ctranslate2":
        from vanilla_transformer.export.ctranslate2 import export_ctranslate2

        folder = export_ctranslate2(model, tokenizer, args.output_dir, args.quantization)
    else:
        from vanilla_transformer.export.onnx import export_onnx

        folder = export_onnx(model, tokenizer, args.output_dir)
    logger.info("Wrote the %s model to %s", args.format, folder)


if __name__ == "__main__":
    main()
