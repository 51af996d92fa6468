"""Compare attention scalings: sqrt(d_k) (Vaswani et al.) vs the sum of key norms (Bernhard 2023).

    python scripts/attention_scaling_study.py simulate            # random queries/keys, seconds
    python scripts/attention_scaling_study.py train               # trained models (training half)

`train` trains both scalings in every setting (post-LN, pre-LN, no warm-up) for every seed and
writes training.json, training_curves.png, grad_norms.png and attention_entropy.png; the logic is
research.attention_study.

`simulate` writes first_component.png, sweeps.png and simulation.json into --out_dir; the numbers
come from research.attention_simulation and the write-up is docs/attention_scaling.md.
"""

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display on the training machines
import matplotlib.pyplot as plt
import numpy as np

# First: the package's log filters precede transformers' torchao import (quiet_imports).
import vanilla_transformer  # noqa: F401

# isort: split
from transformers import HfArgumentParser

from research import attention_simulation, attention_study

logger = logging.getLogger(__name__)

LABELS = {"none": "q.k (raw)", "sqrt_dk": "q.k / sqrt(d)", "key_norm_sum": "q.k / sum_j ||k_j||"}
COLORS = {"none": "tab:gray", "sqrt_dk": "tab:blue", "key_norm_sum": "tab:red"}
# Statistic name -> (axis title, log y-axis?)
SWEEP_PANELS = {
    "max_weight": ("mean max attention weight", True),
    "entropy_ratio": ("mean entropy / log n", False),
    "jacobian_spectral": ("mean ||diag(p) - pp^T||: spectral (-), Frobenius (--)", True),
    "query_grad_fro": ("mean ||dp/dq||_F", True),
    "logit_std": ("mean std of the logits", True),
}
LOG10_FLOOR = -12  # p_1 below 1e-12 is drawn in the leftmost bin of the log panels


def plot_first_component(result, path):
    """The paper's plot, one column per d: density of p_1 on [0, 1], and of log10 p_1 below it."""
    first = result["first_component"]
    n = result["settings"]["paper_num_keys"]
    dims = [str(d) for d in result["settings"]["paper_dims"]]
    fig, axes = plt.subplots(2, len(dims), figsize=(6 * len(dims), 7), squeeze=False)
    for col, d in enumerate(dims):
        top, bottom = axes[0, col], axes[1, col]
        for scaling in attention_simulation.SCALINGS:
            p1 = np.asarray(first[scaling][d])
            style = {"histtype": "step", "density": True, "color": COLORS[scaling], "lw": 1.5}
            top.hist(p1, bins=np.linspace(0, 1, 51), label=LABELS[scaling], **style)
            log_p1 = np.clip(np.log10(np.maximum(p1, 1e-300)), LOG10_FLOOR, 0)
            bottom.hist(log_p1, bins=np.linspace(LOG10_FLOOR, 0, 97), **style)
        for ax in (top, bottom):
            ax.set_yscale("log")
        top.axvline(1 / n, color="k", ls=":", lw=1, label="1/n (uniform)")
        bottom.axvline(math.log10(1 / n), color="k", ls=":", lw=1)
        top.set_title(f"d = {d}, n = {n} keys: density of the first softmax output p_1")
        top.set_xlabel("p_1")
        bottom.set_xlabel(f"log10 p_1 (values below 1e{LOG10_FLOOR} in the leftmost bin)")
        top.set_ylabel("density")
        bottom.set_ylabel("density")
        top.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sweeps(result, path):
    """One row per sweep (n at fixed d, d at fixed n), one column per statistic."""
    settings = result["settings"]
    x = settings["sweep_values"]
    rows = [
        ("vs_num_keys", f"number of keys n (d = {settings['sweep_dim']})"),
        ("vs_dim", f"dimension d (n = {settings['sweep_num_keys']})"),
    ]
    fig, axes = plt.subplots(len(rows), len(SWEEP_PANELS), figsize=(4 * len(SWEEP_PANELS), 7))
    for row, (key, xlabel) in enumerate(rows):
        for col, (stat, (title, log_y)) in enumerate(SWEEP_PANELS.items()):
            ax = axes[row, col]
            for scaling in attention_simulation.SCALINGS:
                values = result[key][scaling]
                ax.plot(x, values[stat], "o-", ms=3, color=COLORS[scaling], label=LABELS[scaling])
                if stat == "jacobian_spectral":
                    ax.plot(x, values["jacobian_fro"], "--", color=COLORS[scaling])
            if stat in ("max_weight", "jacobian_spectral"):
                fixed_n = np.full(len(x), settings["sweep_num_keys"])
                n = np.asarray(x) if key == "vs_num_keys" else fixed_n
                ax.plot(x, 1 / n, "k:", lw=1, label="1/n (uniform)")
            ax.set_xscale("log", base=2)
            if log_y:
                ax.set_yscale("log")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def simulate(args):
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = attention_simulation.run_simulation(
        seed=args.seed,
        num_queries=args.num_queries,
        sweep_dim=args.sweep_dim,
        sweep_num_keys=args.sweep_num_keys,
    )
    logger.info("simulation done in %.1f s", time.perf_counter() - start)
    with open(out_dir / "simulation.json", "w") as f:
        json.dump(result, f, indent=1)
    plot_first_component(result, out_dir / "first_component.png")
    plot_sweeps(result, out_dir / "sweeps.png")
    logger.info("wrote simulation.json, first_component.png, sweeps.png to %s", out_dir)


def train(args):
    """The training half: every (setting, scaling, seed) run, then training.json and its figures.

    training.json is rewritten as each run finishes, so an interrupted study keeps its runs;
    `--plot_only` redraws the figures from an existing training.json.
    """
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "training.json"
    if args.plot_only:
        result = json.loads(path.read_text())
    else:
        config = attention_study.StudyConfig(
            **{
                f.name: getattr(args, f.name)
                for f in dataclasses.fields(attention_study.StudyConfig)
            }
        )
        start = time.perf_counter()
        result = attention_study.run_study(
            config,
            on_result=lambda partial: path.write_text(attention_study.dumps(partial)),
        )
        result["wall_seconds"] = round(time.perf_counter() - start, 1)
        path.write_text(attention_study.dumps(result))
    for figure in attention_study.plot_study(result, out_dir):
        logger.info("wrote %s", figure)
    for setting, per_scaling in result["summary"].items():
        for scaling, stats in per_scaling.items():
            logger.info(
                "%-18s %-13s BLEU %.2f +- %.2f, val loss %.3f +- %.3f",
                setting,
                scaling,
                stats["val_bleu"]["mean"],
                stats["val_bleu"]["std"],
                stats["val_loss"]["mean"],
                stats["val_loss"]["std"],
            )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)

    sim = subparsers.add_parser("simulate", help="Random N(0, 1) queries and keys (seconds).")
    sim.add_argument("--out_dir", default="docs/attention_scaling", help="Where PNGs + JSON go.")
    sim.add_argument("--seed", type=int, default=0, help="Seed of the torch.Generator.")
    sim.add_argument(
        "--num_queries", type=int, default=500, help="Queries per setting (the paper used 500)."
    )
    sim.add_argument(
        "--sweep_dim",
        type=int,
        default=attention_simulation.DEFAULT_SWEEP_DIM,
        help="Fixed d while n varies (64 = d_k of the base model).",
    )
    sim.add_argument(
        "--sweep_num_keys",
        type=int,
        default=attention_simulation.DEFAULT_SWEEP_NUM_KEYS,
        help="Fixed n while d varies (32 = the paper's number of keys).",
    )
    sim.set_defaults(func=simulate)

    # The study's options are StudyConfig's fields (HfArgumentParser makes their flags).
    trn = subparsers.add_parser(
        "train",
        help="Train both scalings per setting and seed.",
        parents=[HfArgumentParser(attention_study.StudyConfig, add_help=False)],
    )
    trn.add_argument("--out_dir", default="docs/attention_scaling", help="Where PNGs + JSON go.")
    trn.add_argument(
        "--layers",
        type=int,
        default=None,
        help="Older flag: sets --encoder_layers and --decoder_layers both.",
    )
    trn.add_argument(
        "--plot_only",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Redraw the figures from out_dir/training.json without training.",
    )
    trn.set_defaults(func=train)
    args = parser.parse_args(argv)
    if getattr(args, "layers", None) is not None:
        args.encoder_layers = args.decoder_layers = args.layers
    return args


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
