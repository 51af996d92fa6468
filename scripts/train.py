"""Shim: `python scripts/train.py ...` runs `vanilla_transformer.cli.train` (also installed as a console
tool, see pyproject.toml)."""

import sys

from vanilla_transformer.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
