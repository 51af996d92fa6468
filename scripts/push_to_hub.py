"""Shim: `python scripts/push_to_hub.py ...` runs `vanilla_transformer.cli.push` (also installed as a console
tool, see pyproject.toml)."""

import sys

from vanilla_transformer.cli.push import main

if __name__ == "__main__":
    sys.exit(main())
