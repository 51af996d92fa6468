"""Training curves: loss, learning rate and validation BLEU/chrF against updates and minutes,
drawn from a run's `train_log.jsonl` into `training_curves.png` beside `summary.json`.

matplotlib is optional (the `plots` extra): without it one note is logged and nothing is drawn.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

CURVES_FILE = "training_curves.png"
# (log key, panel title) of each row; each row is drawn against updates and against minutes.
PANELS = (
    ("train/loss", "training loss (label-smoothed, per token)"),
    ("train/lr", "learning rate"),
    ("val/bleu", "validation BLEU"),
    ("val/chrf", "validation chrF"),
)


def read_log(run_dir: str | Path) -> list[dict]:
    """The records of `run_dir/train_log.jsonl` (empty when there is none)."""
    path = Path(run_dir) / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def plot_training_curves(run_dir: str | Path, output: str | Path | None = None) -> Path | None:
    """Draw the curves of `run_dir` into `output` (default `run_dir/training_curves.png`); returns
    the path, or None when matplotlib is missing or nothing was logged."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info(
            "matplotlib is not installed: no training curves PNG "
            "(`pip install 'vanilla-transformer[plots]'` to get one)"
        )
        return None
    records = read_log(run_dir)
    rows = [(key, title) for key, title in PANELS if any(key in r for r in records)]
    if not rows:
        return None
    figure, axes = plt.subplots(len(rows), 2, figsize=(11, 2.6 * len(rows)), squeeze=False)
    for row, (key, title) in enumerate(rows):
        points = [r for r in records if key in r]
        for column, x_key in enumerate(("step", "minutes")):
            ax = axes[row][column]
            xs = [r.get(x_key) for r in points]
            if any(x is None for x in xs):  # a log written before minutes were recorded
                continue
            ax.plot(xs, [r[key] for r in points], marker="o" if len(points) < 30 else None)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("updates" if x_key == "step" else "training minutes")
            ax.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(output) if output is not None else Path(run_dir) / CURVES_FILE
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
