"""Training half of the attention-scaling study: `sqrt_dk` vs `key_norm_sum` in real training.

The simulation (`attention_study`) found that Bernhard's (2023) key-norm-sum scaling avoids a
saturated softmax only by making attention nearly uniform. This module tests that in training: the
same small model, data and budget for both `VanillaTransformerConfig.attention_scaling` values, in
several settings (post-LN, pre-LN, and a no-warm-up, high-learning-rate stress test), over seeds.
Per run it records

- validation curves: label-smoothed loss and NLL on the whole validation split, greedy BLEU/chrF
  (sacrebleu, `evaluation.compute_bleu`) on its first `eval_bleu_samples` verses;
- gradient norms per layer, and of every attention's query and key projections, for each of the
  first `grad_norm_steps` updates (`per_layer_grad_norms`);
- the attention entropy per layer of encoder self-, decoder self- and cross-attention at the end,
  on a validation batch with padding masked (`attention_entropy`, `attention_entropy_by_layer`).

The recipe is `training_config.PRESETS["cpu-small"]` (the loss, schedule, optimizer, step and loop
come from `recipe/loop.py`), with only the norm placement, warm-up and peak learning rate changed per setting. The
runs are seeded: the model's initialisation and the data order depend on the seed alone, so the two
scalings of a seed start from the same weights and see the same batches. `run_study` runs them in
`jobs` worker processes and reports each result as it arrives; `plot_study` draws the figures.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import re
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

from vanilla_transformer.hardware import hardware_description
from vanilla_transformer.recipe.loop import (
    TrainingCallback,
    TrainState,
    build_optimizer_and_scheduler,
    label_smoothed_loss,
)
from vanilla_transformer.recipe.options import option
from vanilla_transformer.recipe.training import build_model
from vanilla_transformer.recipe.training_config import PRESETS, TrainingConfig, resolve_config

logger = logging.getLogger(__name__)

SCALINGS = ("sqrt_dk", "key_norm_sum")
ATTENTION_KINDS = ("encoder_self", "decoder_self", "cross")
CPU_SMALL = PRESETS["cpu-small"]


@dataclasses.dataclass(frozen=True)
class Setting:
    """What differs between the study's settings: norm placement and the learning-rate schedule
    (Noam, `training.noam_lambda`, parameterised by its warm-up and its peak rate). A warm-up of
    None takes `StudyConfig.warmup_steps` (cpu-small's 400 unless a shorter study scales it)."""

    norm_first: bool
    warmup_steps: int | None
    peak_lr: float
    description: str


# cpu-small's schedule: peak 0.83 / sqrt(192 * 400) = 3.0e-3 after 400 warm-up updates.
TUNED_PEAK_LR = CPU_SMALL["lr_factor"] / math.sqrt(CPU_SMALL["d_model"] * CPU_SMALL["warmup_steps"])
SETTINGS = {
    "post_ln": Setting(False, None, TUNED_PEAK_LR, "post-LN (the paper), cpu-small's peak lr"),
    "pre_ln": Setting(True, None, TUNED_PEAK_LR, "pre-LN (cpu-small's choice), its peak lr"),
    # Where the paper's argument should matter most: large early updates grow q and k fast, which is
    # what drives attention logits into saturation (the attention-logit-growth instability). Warm-up
    # of 10 updates to 1e-2 (3.3 x the tuned peak), then the same inverse-sqrt decay.
    "pre_ln_no_warmup": Setting(True, 10, 1e-2, "pre-LN, warm-up 10 updates to a peak lr of 1e-2"),
    "post_ln_no_warmup": Setting(
        False, 10, 1e-2, "post-LN, warm-up 10 updates to a peak lr of 1e-2"
    ),
}
DEFAULT_SETTINGS = ("post_ln", "pre_ln", "pre_ln_no_warmup")


@dataclasses.dataclass
class StudyConfig:
    """Everything a study run depends on; defaults are the cpu-small model on the Bible corpus.
    Options it shares with training carry `TrainingConfig`'s names and meaning (`SHARED_OPTIONS`);
    the older study flags (--eval_every, --bleu_samples, --minutes_per_run) remain as aliases."""

    settings: list[str] = dataclasses.field(
        default_factory=lambda: list(DEFAULT_SETTINGS),
        metadata={
            "help": "Norm placement / schedule settings; each trains both scalings for every seed.",
            "choices": sorted(SETTINGS),
        },
    )
    seeds: list[int] = dataclasses.field(
        default_factory=lambda: [0, 1], metadata={"help": "Seeds."}
    )
    scalings: list[str] = dataclasses.field(
        default_factory=lambda: list(SCALINGS),
        metadata={"help": "Attention scalings compared.", "choices": list(SCALINGS)},
    )
    max_steps: int = option(2000, "Updates per run (all runs).")
    max_train_minutes: float = option(
        5.0,
        "Cap on each run's training time, evaluation excluded (0: none).",
        aliases=["--minutes_per_run"],
    )
    eval_steps: int = option(
        200,
        "Validation loss and BLEU every N updates (and at 0 and the end).",
        aliases=["--eval_every"],
    )
    eval_bleu_samples: int = option(
        200, "Validation verses translated (greedy) for BLEU.", aliases=["--bleu_samples"]
    )
    grad_norm_steps: int = option(100, "Gradient norms recorded for the first N updates.")
    entropy_sentences: int = option(64, "Validation verses in the attention-entropy batch.")
    device: str = option("cpu", "cpu, cuda, cuda:1, ...")
    threads: int = option(1, "torch threads per run.")
    jobs: int = option(1, "Runs at a time (worker processes).")
    dataset: str = option(
        "bible", "'bible' or a corpus for load_translation_dataset (with train/validation splits)."
    )
    bible_cache_dir: str = option("data_cache/bible", "The built Bible corpus.")
    tokenizer: str = option("data_cache/tokenizer", "Tokenizer folder.")
    # Model and batch sizes: the cpu-small preset's by default.
    d_model: int = option(CPU_SMALL["d_model"], "d_model (default: cpu-small's).")
    ffn_dim: int = option(CPU_SMALL["ffn_dim"], "ffn_dim (default: cpu-small's).")
    attention_heads: int = option(CPU_SMALL["attention_heads"], "Heads (default: cpu-small's).")
    encoder_layers: int = option(CPU_SMALL["encoder_layers"], "Encoder layers (cpu-small's).")
    decoder_layers: int = option(CPU_SMALL["decoder_layers"], "Decoder layers (cpu-small's).")
    batch_tokens: int = option(CPU_SMALL["batch_tokens"], "Tokens per batch (cpu-small's).")
    max_source_length: int = option(
        CPU_SMALL["max_source_length"], "Drop pairs whose source is longer (tokens)."
    )
    max_target_length: int = option(
        CPU_SMALL["max_target_length"], "Drop pairs whose target is longer (tokens)."
    )
    warmup_steps: int = option(
        CPU_SMALL["warmup_steps"],
        "Warm-up of the post_ln / pre_ln settings (the *_no_warmup ones keep 10).",
    )

    def __post_init__(self):
        self.settings, self.seeds = tuple(self.settings), tuple(self.seeds)
        self.scalings = tuple(self.scalings)
        unknown = [s for s in self.settings if s not in SETTINGS]
        if unknown:
            raise ValueError(f"settings {unknown} unknown; choose from {sorted(SETTINGS)}.")
        bad = [s for s in self.scalings if s not in SCALINGS]
        if bad:
            raise ValueError(f"scalings {bad} unknown; choose from {list(SCALINGS)}.")
        if self.max_steps < 1 or self.eval_steps < 1:
            raise ValueError(
                f"max_steps ({self.max_steps}) and eval_steps ({self.eval_steps}) must be >= 1."
            )

    def training_config(self, setting: str, seed: int):
        """cpu-small with this study's model size and the setting's schedule, as a TrainingConfig
        (so that `training.build_optimizer_and_scheduler` builds the optimizer)."""
        s = SETTINGS[setting]
        warmup = self.warmup_steps if s.warmup_steps is None else s.warmup_steps
        return resolve_config(
            "cpu-small",
            **{name: getattr(self, name) for name in SHARED_OPTIONS},
            norm_first=s.norm_first,
            warmup_steps=warmup,
            # Noam's peak is factor / sqrt(d_model * warmup): solve for the factor.
            lr_factor=s.peak_lr * math.sqrt(self.d_model * warmup),
            seed=seed,
        )


# StudyConfig fields that are TrainingConfig fields of the same name and meaning (the setting's
# warm-up and seed are resolved per run by `StudyConfig.training_config`).
SHARED_OPTIONS = tuple(
    sorted(
        (
            {f.name for f in dataclasses.fields(StudyConfig)}
            & {f.name for f in dataclasses.fields(TrainingConfig)}
        )
        - {"warmup_steps"}
    )
)


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------

_LAYER_PARAM = re.compile(r"(?:model\.)?(encoder|decoder)\.layers\.(\d+)\.(.+)")
_QK_PARAM = re.compile(r"(self_attn|encoder_attn)\.(q_proj|k_proj)\.weight")


def per_layer_grad_norms(model: torch.nn.Module) -> dict[str, float]:
    """L2 norms of the current gradients, grouped: `encoder.<i>` / `decoder.<i>` (every parameter
    of that layer), `encoder.<i>.self_attn.q_proj` etc. (the query and key projections of every
    attention), `other` (embeddings, final norms) and `total`. Parameters without a gradient are
    skipped."""
    squares: dict[str, list[torch.Tensor]] = defaultdict(list)
    for name, param in model.named_parameters():
        if param.grad is None:
            continue
        square = param.grad.detach().float().pow(2).sum()
        squares["total"].append(square)
        layer = _LAYER_PARAM.fullmatch(name)
        if layer is None:
            squares["other"].append(square)
            continue
        side, index, rest = layer.groups()
        squares[f"{side}.{index}"].append(square)
        qk = _QK_PARAM.fullmatch(rest)
        if qk is not None:
            squares[f"{side}.{index}.{qk[1]}.{qk[2]}"].append(square)
    keys = sorted(squares)
    norms = torch.stack([torch.stack(squares[k]).sum() for k in keys]).sqrt().tolist()
    return dict(zip(keys, norms, strict=True))


def attention_entropy(
    weights: torch.Tensor, query_mask: torch.Tensor, key_mask: torch.Tensor
) -> dict[str, float]:
    """Statistics of attention rows, averaged over heads and the real (unpadded) queries.

    weights (B, h, T, S); query_mask (B, T) bool, True for real queries; key_mask bool,
    broadcastable to (B, T, S), True where the query may attend the key (padding and, for causal
    attention, future keys are False). Weights on masked keys are ignored.

    Returns the mean entropy H in nats, `entropy_ratio` = H / log(n) with n the query's number of
    visible keys (1 = uniform; queries with a single visible key are left out, their ratio is
    undefined), `uniform_entropy` = the mean log(n), and the mean largest weight `max_weight`.
    """
    B, h, T, S = weights.shape
    key_mask = key_mask.expand(B, T, S)
    p = weights.float() * key_mask[:, None]  # (B, h, T, S)
    entropy = torch.special.entr(p).sum(-1)  # (B, h, T); entr(0) = 0
    visible = key_mask.sum(-1).float()[:, None].expand(B, h, T)  # (B, h, T)
    real = query_mask.bool()[:, None].expand(B, h, T)
    several = real & (visible > 1)
    return {
        "entropy": entropy[real].mean().item(),
        "entropy_ratio": (entropy[several] / visible[several].log()).mean().item(),
        "uniform_entropy": visible[real].log().mean().item(),
        "max_weight": p.amax(-1)[real].mean().item(),
    }


@torch.no_grad()
def attention_entropy_by_layer(model, batch: dict) -> dict[str, list[dict[str, float]]]:
    """`attention_entropy` of every layer's encoder self-, decoder self- and cross-attention on a
    collated batch (input_ids, attention_mask, labels, decoder_input_ids). The model runs in eval
    mode with eager attention (the only implementation that returns weights) and is restored."""
    was_training, implementation = model.training, model.config._attn_implementation
    model.eval()
    model.set_attn_implementation("eager")
    try:
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=batch["decoder_input_ids"],
            output_attentions=True,
        )
    finally:
        model.set_attn_implementation(implementation)
        model.train(was_training)
    source = batch["attention_mask"].bool()  # (B, S)
    target = batch["labels"] != -100  # (B, T): real decoder positions
    T = target.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=target.device).tril()  # (T, T)
    masks = {
        "encoder_self": (source, source[:, None, :]),
        # Real queries only see earlier positions, which are all real (padding is at the end).
        "decoder_self": (target, causal[None]),
        "cross": (target, source[:, None, :]),
    }
    weights = {
        "encoder_self": out.encoder_attentions,
        "decoder_self": out.decoder_attentions,
        "cross": out.cross_attentions,
    }
    return {
        kind: [attention_entropy(w, *masks[kind]) for w in weights[kind]]
        for kind in ATTENTION_KINDS
    }


def query_weight_norms(model) -> dict[str, float]:
    """Frobenius norms of every attention's W^Q: the only lever key_norm_sum leaves the model to
    sharpen attention (its divisor does not change when the keys are rescaled)."""
    return {
        name.removeprefix("model.").removesuffix(".weight"): param.detach().norm().item()
        for name, param in model.named_parameters()
        if name.endswith("q_proj.weight")
    }


# --------------------------------------------------------------------------------------------------
# Data and one run
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class StudyData:
    tokenizer: object
    train: object  # tokenised datasets.Dataset
    validation: object
    bleu_sources: list[str]
    bleu_references: list[str]


def load_study_data(config: StudyConfig) -> StudyData:
    """The corpus (built Bible cache or `config.dataset`), the tokenizer and the tokenised splits
    (pairs longer than `max_source_length` / `max_target_length` tokens dropped, as in
    training)."""
    from transformers import AutoTokenizer

    from vanilla_transformer.recipe.data import tokenize_translation_dataset
    from vanilla_transformer.recipe.options import CorpusOptions

    corpus = CorpusOptions(dataset=config.dataset, bible_cache_dir=config.bible_cache_dir).load()
    for split in ("train", "validation"):
        if split not in corpus:
            raise ValueError(f"dataset {config.dataset!r} has no {split} split: {list(corpus)}.")
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
    splits = {"train": corpus["train"], "validation": corpus["validation"]}
    tokenized, _ = tokenize_translation_dataset(
        type(corpus)(splits),
        tokenizer,
        "en",
        "es",
        config.max_source_length,
        config.max_target_length,
    )
    bleu_rows = corpus["validation"].select(
        range(min(config.eval_bleu_samples, len(corpus["validation"])))
    )["translation"]
    return StudyData(
        tokenizer,
        tokenized["train"],
        tokenized["validation"],
        [row["en"] for row in bleu_rows],
        [row["es"] for row in bleu_rows],
    )


@torch.no_grad()
def evaluate(model, loader, data: StudyData, device, epsilon: float) -> dict[str, float]:
    """Label-smoothed loss and NLL per target token on the validation loader, and greedy BLEU and
    chrF on the BLEU verses."""
    from vanilla_transformer.recipe.evaluation import compute_bleu, translate

    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        loss, nll, count = label_smoothed_loss(model(**batch).logits, batch["labels"], epsilon)
        totals += torch.stack([loss.double(), nll.double(), count.double()]).cpu()
    hypotheses = translate(
        model, data.tokenizer, data.bleu_sources, batch_size=100, num_beams=1, device=device
    )
    scores = compute_bleu(hypotheses, data.bleu_references)
    model.train(was_training)
    tokens = max(totals[2].item(), 1.0)
    return {
        "val_loss": totals[0].item() / tokens,
        "val_nll": totals[1].item() / tokens,
        "val_bleu": scores["bleu"],
        "val_chrf": scores["chrf"],
    }


def _sig(x: float, digits: int = 4) -> float:
    """Round to `digits` significant digits: keeps the JSON small."""
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


class StudyRecorder(TrainingCallback):
    """The study's measurements, taken by the recipe's `training_loop`: gradient norms of the
    first `grad_norm_steps` updates (skipped ones included), and the validation curves every
    `eval_steps` updates. Stops the loop after `max_train_minutes` of training (evaluation
    excluded)."""

    def __init__(self, config: StudyConfig, evaluate_model: Callable[[], dict[str, float]]):
        self.config, self.evaluate_model = config, evaluate_model
        self.curves: dict[str, list] = defaultdict(list)
        self.grad_norms: dict[str, list] = defaultdict(list)
        self.window: list[float] = []
        self.train_seconds = 0.0
        self.resumed = time.perf_counter()

    def record(self, step: int, train_loss: float | None) -> None:
        self.curves["step"].append(step)
        self.curves["train_loss"].append(None if train_loss is None else _sig(train_loss))
        for key, value in self.evaluate_model().items():
            self.curves[key].append(_sig(value))

    def on_backward(self, model, state: TrainState) -> None:
        if state.step < self.config.grad_norm_steps:
            for key, value in per_layer_grad_norms(model).items():
                self.grad_norms[key].append(_sig(value))

    def on_update(self, model, state: TrainState, update) -> str | None:
        self.window.append(update.loss)
        step = state.step
        return self.after(step % self.config.eval_steps == 0 or step == self.config.max_steps, step)

    def on_skipped(self, model, state: TrainState) -> str | None:
        return self.after(False, state.step)

    def after(self, due: bool, step: int) -> str | None:
        self.train_seconds += time.perf_counter() - self.resumed
        minutes = self.config.max_train_minutes
        out_of_time = minutes > 0 and self.train_seconds >= 60 * minutes
        if due or out_of_time:
            self.record(step, float(np.mean(self.window)) if self.window else float("nan"))
            self.window = []
        self.resumed = time.perf_counter()
        return "max_train_minutes" if out_of_time else None


def train_one(config: StudyConfig, setting: str, scaling: str, seed: int, data: StudyData) -> dict:
    """Train one model for `config.max_steps` updates (or `max_train_minutes`) with the recipe's
    `training_loop`, measured by a `StudyRecorder`."""
    from torch.utils.data import DataLoader

    from vanilla_transformer.recipe.data import TokenBudgetBatchSampler, make_collator
    from vanilla_transformer.recipe.loop import micro_batches, training_loop
    from vanilla_transformer.recipe.training import make_accelerator

    device = torch.device(config.device)
    tc = dataclasses.replace(
        config.training_config(setting, seed), max_steps=config.max_steps, log_with="none"
    )
    torch.manual_seed(seed)  # the same initial weights for both scalings of a seed
    model = build_model(tc, len(data.tokenizer), attention_scaling=scaling).to(device)
    optimizer, scheduler = build_optimizer_and_scheduler(model, tc)
    collator = make_collator(data.tokenizer, model)
    sampler = TokenBudgetBatchSampler.from_dataset(data.train, tc.batch_tokens, seed=seed)
    stream = micro_batches(
        DataLoader(data.train, batch_sampler=sampler, collate_fn=collator), sampler, 0
    )
    val_sampler = TokenBudgetBatchSampler.from_dataset(
        data.validation, tc.batch_tokens, shuffle=False
    )
    val_loader = DataLoader(data.validation, batch_sampler=val_sampler, collate_fn=collator)
    n_entropy = min(config.entropy_sentences, len(data.validation))
    entropy_batch = collator([data.validation[i] for i in range(n_entropy)])
    entropy_batch = {k: v.to(device) for k, v in entropy_batch.items()}

    recorder = StudyRecorder(
        config, lambda: evaluate(model, val_loader, data, device, tc.label_smoothing)
    )
    query_norms_init = query_weight_norms(model)
    recorder.record(0, None)
    state = TrainState()
    model.train()
    recorder.resumed = time.perf_counter()
    stop_reason = training_loop(
        model, optimizer, scheduler, make_accelerator(tc), stream, tc, state, [recorder]
    )
    step, curves, grad_norms = state.step, recorder.curves, recorder.grad_norms
    query_norms_final = query_weight_norms(model)
    return {
        "setting": setting,
        "attention_scaling": scaling,
        "norm_first": tc.norm_first,
        "warmup_steps": tc.warmup_steps,
        "peak_lr": _sig(tc.lr_factor / math.sqrt(tc.d_model * tc.warmup_steps)),
        "seed": seed,
        "steps": step,
        "train_seconds": round(recorder.train_seconds, 1),
        "stop_reason": stop_reason,
        "nonfinite_updates": state.skipped_updates,
        "final": {k: curves[k][-1] for k in ("val_loss", "val_nll", "val_bleu", "val_chrf")},
        "curves": dict(curves),
        "grad_norms": dict(grad_norms),
        "entropy": {
            kind: [{k: _sig(v) for k, v in layer.items()} for layer in layers]
            for kind, layers in attention_entropy_by_layer(model, entropy_batch).items()
        },
        "query_weight_norm": {
            name: {"init": _sig(query_norms_init[name]), "final": _sig(norm)}
            for name, norm in query_norms_final.items()
        },
    }


# --------------------------------------------------------------------------------------------------
# The study: all runs, in worker processes, and its summary
# --------------------------------------------------------------------------------------------------


def _worker(config: StudyConfig, setting: str, scaling: str, seed: int) -> dict:
    torch.set_num_threads(config.threads)
    logging.basicConfig(level=logging.WARNING)
    return train_one(config, setting, scaling, seed, load_study_data(config))


def run_specs(config: StudyConfig) -> list[tuple[str, str, int]]:
    """(setting, scaling, seed) of every run, the two scalings of a seed next to each other."""
    return [
        (st, sc, seed) for st in config.settings for seed in config.seeds for sc in config.scalings
    ]


def run_study(config: StudyConfig, on_result: Callable[[dict], None] | None = None) -> dict:
    """Every run of the study; `on_result(partial_result)` is called as each run finishes, so an
    interrupted study keeps what it finished. Returns `{"config", "hardware", "runs", "summary"}`
    with the runs in `run_specs` order."""
    specs = run_specs(config)
    # Tokenise once here: the workers then load the datasets cache instead of racing to write it.
    data = load_study_data(config)
    done: dict[tuple, dict] = {}

    def result() -> dict:
        runs = [done[spec] for spec in specs if spec in done]
        return {
            "config": dataclasses.asdict(config),
            "settings": {name: dataclasses.asdict(SETTINGS[name]) for name in config.settings},
            "hardware": hardware(config),
            "train_pairs": len(data.train),
            "validation_pairs": len(data.validation),
            "runs": runs,
            "summary": summarize(runs),
        }

    def finished(spec, run: dict) -> None:
        done[spec] = run
        logger.info(
            "%s %s seed %d: %d updates, val loss %.3f, BLEU %.2f (%d/%d runs)",
            *spec,
            run["steps"],
            run["final"]["val_loss"],
            run["final"]["val_bleu"],
            len(done),
            len(specs),
        )
        if on_result is not None:
            on_result(result())

    if config.jobs <= 1:
        torch.set_num_threads(config.threads)
        for spec in specs:
            finished(spec, train_one(config, *spec, data))
    else:
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        with ProcessPoolExecutor(config.jobs, mp_context=context) as pool:
            futures = {pool.submit(_worker, config, *spec): spec for spec in specs}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    return result()


def hardware(config: StudyConfig) -> str:
    return (
        f"{hardware_description(config.device)}; {config.jobs} run(s) at a time, "
        f"{config.threads} torch thread(s) each"
    )


def _spread(values: list[float]) -> dict:
    array = np.asarray(values, dtype=float)
    return {
        "mean": _sig(float(array.mean())),
        "std": _sig(float(array.std(ddof=1))) if len(array) > 1 else 0.0,
        "min": _sig(float(array.min())),
        "max": _sig(float(array.max())),
        "values": [_sig(v) for v in array.tolist()],
    }


def grad_norm_groups(grad_norms: dict[str, list]) -> dict[str, list[float]]:
    """Per-update gradient norms averaged over layers: `layer` (whole layers), and the query /
    key projections of each attention kind (`encoder_self.q_proj`, ..., `cross.k_proj`)."""
    names = {
        "encoder.self_attn": "encoder_self",
        "decoder.self_attn": "decoder_self",
        "decoder.encoder_attn": "cross",
    }
    groups: dict[str, list[list[float]]] = defaultdict(list)
    for key, series in grad_norms.items():
        parts = key.split(".")
        if len(parts) == 2 and parts[0] in ("encoder", "decoder"):
            groups["layer"].append(series)
        elif len(parts) == 4:
            groups[f"{names[f'{parts[0]}.{parts[2]}']}.{parts[3]}"].append(series)
        elif key == "total":
            groups["total"].append(series)
    return {name: np.mean(series, axis=0).tolist() for name, series in sorted(groups.items())}


def summarize(runs: list[dict]) -> dict:
    """{setting: {scaling: statistics over seeds}}: final validation metrics, mean gradient norm
    over the recorded early updates per group, attention entropy ratio per kind (mean over
    layers), and the growth of ||W^Q|| over training (final / initial, mean over attentions)."""
    by_group: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_group[run["setting"]][run["attention_scaling"]].append(run)
    summary = {}
    for setting, per_scaling in by_group.items():
        summary[setting] = {}
        for scaling, group in per_scaling.items():
            stats = {k: _spread([r["final"][k] for r in group]) for k in group[0]["final"]}
            stats["steps"] = [r["steps"] for r in group]
            stats["nonfinite_updates"] = [r["nonfinite_updates"] for r in group]
            norms = [grad_norm_groups(r["grad_norms"]) for r in group]
            stats["early_grad_norm"] = {
                name: _spread([float(np.mean(n[name])) for n in norms]) for name in norms[0]
            }
            stats["entropy_ratio"] = {
                kind: _spread(
                    [np.mean([la["entropy_ratio"] for la in r["entropy"][kind]]) for r in group]
                )
                for kind in ATTENTION_KINDS
            }
            stats["max_weight"] = {
                kind: _spread(
                    [np.mean([la["max_weight"] for la in r["entropy"][kind]]) for r in group]
                )
                for kind in ATTENTION_KINDS
            }
            stats["query_weight_growth"] = _spread(
                [
                    np.mean([v["final"] / v["init"] for v in r["query_weight_norm"].values()])
                    for r in group
                ]
            )
            summary[setting][scaling] = stats
    return summary


def dumps(result: dict) -> str:
    """JSON with one line per list of numbers, so the file stays small and diffable."""
    text = json.dumps(result, indent=1)
    return re.sub(
        r"\[\s+([-0-9.eE,\snulNaIfity]+?)\s+\]",
        lambda m: "[" + re.sub(r"\s+", " ", m[1]) + "]",
        text,
    )


# --------------------------------------------------------------------------------------------------
# Figures (matplotlib is an optional dependency: imported here only)
# --------------------------------------------------------------------------------------------------

COLORS = {"sqrt_dk": "tab:blue", "key_norm_sum": "tab:red"}
LABELS = {"sqrt_dk": "q.k / sqrt(d_k)", "key_norm_sum": "q.k / sum_j ||k_j||"}


def plot_study(result: dict, out_dir: str | Path, dpi: int = 100) -> list[Path]:
    """training_curves.png, grad_norms.png and attention_entropy.png into `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    settings = list(dict.fromkeys(r["setting"] for r in result["runs"]))
    figures = {
        "training_curves.png": _plot_curves,
        "grad_norms.png": _plot_grad_norms,
        "attention_entropy.png": _plot_entropy,
    }
    return [
        _save(draw(plt, result, settings), out_dir / name, dpi) for name, draw in figures.items()
    ]


def _runs_of(result: dict, setting: str, scaling: str) -> list[dict]:
    """The runs of one setting and scaling (a run per seed)."""
    return [
        r for r in result["runs"] if r["setting"] == setting and r["attention_scaling"] == scaling
    ]


def _plot_curves(plt, result: dict, settings: list[str]):
    """Validation loss and BLEU over updates, a row per setting, a line per seed."""
    fig, axes = plt.subplots(len(settings), 2, figsize=(11, 3.2 * len(settings)), squeeze=False)
    for row, setting in enumerate(settings):
        for col, (key, title) in enumerate(
            (
                ("val_loss", "validation loss (label-smoothed)"),
                ("val_bleu", "validation BLEU (greedy)"),
            )
        ):
            ax = axes[row, col]
            for scaling in SCALINGS:
                runs = _runs_of(result, setting, scaling)
                for i, run in enumerate(runs):
                    label = LABELS[scaling] if i == 0 else None
                    curve = [np.nan if v is None else v for v in run["curves"][key]]
                    ax.plot(
                        run["curves"]["step"],
                        curve,
                        color=COLORS[scaling],
                        lw=1.2,
                        alpha=0.8,
                        ls=("-", "--", ":", "-.")[i % 4],
                        label=label,
                    )
            ax.set_title(f"{setting}: {title}", fontsize=9)
            ax.set_xlabel("update")
            ax.grid(alpha=0.3)
            if key == "val_loss":
                ax.set_ylim(top=min(ax.get_ylim()[1], 9.5))
        axes[row, 0].legend(fontsize=8, title="one line per seed", title_fontsize=7)
    return fig


def _plot_grad_norms(plt, result: dict, settings: list[str]):
    """Gradient norms of the first updates, mean over seeds and layers."""
    panels = ("encoder_self.q_proj", "decoder_self.q_proj", "cross.q_proj", "cross.k_proj", "layer")
    fig, axes = plt.subplots(
        len(settings), len(panels), figsize=(3.4 * len(panels), 2.9 * len(settings)), squeeze=False
    )
    for row, setting in enumerate(settings):
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            for scaling in SCALINGS:
                series = [
                    grad_norm_groups(r["grad_norms"])[panel]
                    for r in _runs_of(result, setting, scaling)
                ]
                if series:
                    steps = np.arange(1, len(series[0]) + 1)
                    ax.plot(
                        steps, np.mean(series, axis=0), color=COLORS[scaling], label=LABELS[scaling]
                    )
            ax.set_yscale("log")
            ax.set_title(f"{setting}: ||grad|| {panel}", fontsize=8)
            ax.set_xlabel("update")
            ax.grid(alpha=0.3)
        axes[row, 0].legend(fontsize=7)
    fig.suptitle("Gradient norms in the first updates (mean over seeds and layers)", fontsize=10)
    return fig


def _plot_entropy(plt, result: dict, settings: list[str]):
    """Attention entropy / log n per attention kind and layer at the end of training."""
    fig, axes = plt.subplots(1, len(settings), figsize=(4.6 * len(settings), 3.6), squeeze=False)
    for col, setting in enumerate(settings):
        ax = axes[0, col]
        ticks = []
        for s, scaling in enumerate(SCALINGS):
            runs = _runs_of(result, setting, scaling)
            if not runs:
                continue
            x = 0
            for kind in ATTENTION_KINDS:
                for layer in range(len(runs[0]["entropy"][kind])):
                    values = [r["entropy"][kind][layer]["entropy_ratio"] for r in runs]
                    ax.bar(
                        x + 0.4 * s - 0.2,
                        np.mean(values),
                        width=0.4,
                        color=COLORS[scaling],
                        yerr=[[np.mean(values) - min(values)], [max(values) - np.mean(values)]],
                        label=LABELS[scaling] if x == 0 else None,
                    )
                    if s == 0:
                        ticks.append(f"{kind}\nL{layer}")
                    x += 1
        ax.axhline(1.0, color="k", ls=":", lw=1)
        ax.set_xticks(range(len(ticks)), ticks, fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{setting}: attention entropy / log n at the end", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    return fig


def _save(fig, path: Path, dpi: int) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
