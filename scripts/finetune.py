"""Shim: `python scripts/finetune.py ...` runs `vanilla_transformer.cli.finetune` (also installed as a console
tool, see pyproject.toml)."""

import sys

from vanilla_transformer.cli.finetune import main

if __name__ == "__main__":
    sys.exit(main())
