"""Shim: `python scripts/train_tokenizer.py ...` runs `vanilla_transformer.cli.train_tokenizer` (also installed as a console
tool, see pyproject.toml)."""

import sys

from vanilla_transformer.cli.train_tokenizer import main

if __name__ == "__main__":
    sys.exit(main())
