"""Shim: `python scripts/gpu_check.py ...` runs `research/gpu_check.py` (research code is not installed;
it lives in the repository's research/ folder)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from research.gpu_check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
