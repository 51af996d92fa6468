"""Shim: `python scripts/build_corpus.py ...` runs `vanilla_transformer.cli.build_corpus` (also installed as a console
tool, see pyproject.toml)."""

import sys

from vanilla_transformer.cli.build_corpus import main

if __name__ == "__main__":
    sys.exit(main())
