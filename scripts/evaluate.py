"""Shim: `python scripts/evaluate.py ...` runs `vanilla_transformer.cli.evaluate` (also installed as a console
tool, see pyproject.toml)."""

import sys

from vanilla_transformer.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
