"""Shim: `python scripts/attention_scaling_study.py ...` runs `research/run_attention_study.py` (research code is not installed;
it lives in the repository's research/ folder)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from research.run_attention_study import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
