"""Shim: `python scripts/benchmark.py ...` runs `research/run_benchmark.py` (research code is not installed;
it lives in the repository's research/ folder)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from research.run_benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
