"""Shim: `python scripts/padding_report.py ...` runs `research/padding_report.py` (research code is not installed;
it lives in the repository's research/ folder)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from research.padding_report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
