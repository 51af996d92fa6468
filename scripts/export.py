"""Export a trained model to CTranslate2 or ONNX: see `python scripts/export.py --help`."""

from vanilla_transformer.cli.export import main

main()
