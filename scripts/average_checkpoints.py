"""Shim: `python scripts/average_checkpoints.py ...` runs `vanilla_transformer.cli.average` (also installed as a console
tool, see pyproject.toml)."""

import sys

from vanilla_transformer.cli.average import main

if __name__ == "__main__":
    sys.exit(main())
