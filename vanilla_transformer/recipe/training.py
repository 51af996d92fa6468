"""Training recipe of the paper (Section 5) as package code, with Accelerate.

- `label_smoothed_loss`: cross entropy with label smoothing eps_ls = 0.1 (Section 5.4), SUMMED over
  target tokens; the loop divides by the number of target tokens of the whole update (all
  micro-batches of the gradient accumulation, all processes), so the gradient does not depend on
  how an update is split.
- `noam_lambda` / `build_optimizer_and_scheduler`: Adam(0.9, 0.98, 1e-9) and
  lr = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5) (Section 5.3, Equation 3).
- `PRESETS`: `base` and `big` (Table 3) and `cpu-small`, a recipe tuned to learn in ~20 minutes on
  2 CPU cores (see `CPU_SMALL_NOTES`).
- `train(config)`: token-budget batches (`data.TokenBudgetBatchSampler`, sharded by rank), gradient
  accumulation up to a token target per update, periodic validation loss and BLEU/chrF, atomic
  checkpoints with exact resume, NaN/inf detection, and the final model as a Hub folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator, PartialState
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from .. import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from ..hardware import hardware_description
from ..publishing.hub import push_folder, save_hub_folder
from .bible import bible_card_info
from .checkpoints import (
    STATE_FILE,
    average_checkpoints,
    complete_checkpoints,
    load_averaged_weights,
    load_checkpoint,
    read_trainer_state,
    resolve_checkpoint,
    save_checkpoint,
)
from .curves import plot_training_curves
from .data import TokenBudgetBatchSampler, make_collator, tokenize_translation_dataset
from .evaluation import evaluate_translation
from .options import CorpusOptions, option
from .run_folder import RunLock, describe_stale, resume_conflicts
from .tokenization import requested_vocab_size, train_tokenizer

logger = get_logger(__name__)

DEFAULT_VOCAB_SIZE = 8000  # a tokenizer trained by a run without tokenizer_vocab_size


# --------------------------------------------------------------------------------------------------
# Loss and schedule (Sections 5.3 and 5.4)
# --------------------------------------------------------------------------------------------------


def label_smoothed_loss(
    logits: torch.Tensor, labels: torch.Tensor, epsilon: float = 0.1, ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Label-smoothed cross entropy, summed over non-ignored positions.

    The target distribution puts 1 - eps on the label and eps spread uniformly over the whole
    vocabulary (the label included), as in fairseq / tensor2tensor: loss = (1 - eps) * NLL + eps *
    mean_v(-log p_v). logits (B, T, V), labels (B, T) with `ignore_index` (and padding id 0 never
    labelled: the collator writes -100 there).

    Returns (smoothed loss sum, NLL sum, number of target tokens), all float32 scalars except the
    count (int64).
    """
    lprobs = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    mask = labels != ignore_index  # (B, T)
    target = labels.masked_fill(~mask, 0).unsqueeze(-1)  # (B, T, 1)
    nll = -lprobs.gather(-1, target).squeeze(-1)  # (B, T)
    smooth = -lprobs.mean(dim=-1)  # (B, T)
    loss = (1.0 - epsilon) * nll + epsilon * smooth
    return loss[mask].sum(), nll[mask].sum(), mask.sum()


def noam_lambda(d_model: int, warmup_steps: int, factor: float = 1.0):
    """Equation 3 as a `LambdaLR` multiplier (the optimizer's base lr must be 1.0): lr(step) =
    factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5). Step 0 (before the first update)
    is evaluated as step 1, so the first update already has a non-zero rate. Peak at step ==
    warmup: factor * (d_model * warmup)^-0.5."""
    if warmup_steps < 1:
        raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}.")

    def lr_lambda(step: int) -> float:
        step = max(step, 1)
        return factor * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)

    return lr_lambda


def build_optimizer_and_scheduler(model: torch.nn.Module, config: TrainingConfig):
    """Adam(beta1, beta2, eps) (Section 5.3) with the Noam schedule as a `LambdaLR`."""
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=1.0,  # LambdaLR multiplies this base rate by noam_lambda(step)
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, noam_lambda(config.d_model, config.warmup_steps, config.lr_factor)
    )
    return optimizer, scheduler


# --------------------------------------------------------------------------------------------------
# Configuration and presets
# --------------------------------------------------------------------------------------------------


_f = option


PRESETS: dict[str, dict] = {
    # Table 3, base: 512/2048/8 heads/6+6, P_drop 0.1, ~25k source + 25k target tokens per update,
    # 100k updates, warm-up 4000; the 5 last checkpoints averaged (Section 6.1).
    "base": dict(
        d_model=512, ffn_dim=2048, attention_heads=8, encoder_layers=6, decoder_layers=6,
        dropout=0.1, norm_first=False, tokenizer_vocab_size=37000, update_tokens=50000,
        warmup_steps=4000, lr_factor=1.0, max_steps=100000, checkpoint_steps=5000,
        average_last=5,
    ),
    # Table 3, big: 1024/4096/16 heads, P_drop 0.3, 300k updates, the 20 last checkpoints.
    "big": dict(
        d_model=1024, ffn_dim=4096, attention_heads=16, encoder_layers=6, decoder_layers=6,
        dropout=0.3, norm_first=False, tokenizer_vocab_size=37000, update_tokens=50000,
        warmup_steps=4000, lr_factor=1.0, max_steps=300000, checkpoint_steps=10000,
        average_last=20,
    ),
    # Tuned for 2 CPU cores (see CPU_SMALL_NOTES): small, shallow and fast, pre-LN, a high peak lr
    # (3e-3 = 0.83 / sqrt(192 * 400)), no dropout, many small updates. Bounded by updates, not
    # minutes, so that every machine trains the same model: 5,500 updates took 20 minutes on the
    # reference machine (Intel Xeon, 2 cores); a slower machine takes longer, it does not score less.
    "cpu-small": dict(
        d_model=192, ffn_dim=768, attention_heads=4, encoder_layers=2, decoder_layers=2,
        dropout=0.0, norm_first=True, tokenizer_vocab_size=4000, max_position_embeddings=256,
        max_source_length=96, max_target_length=96, batch_tokens=2500, update_tokens=2500,
        warmup_steps=400, lr_factor=0.83, max_steps=5500, max_train_minutes=0.0,
        logging_steps=25, eval_steps=500, eval_bleu_samples=100, eval_num_beams=4,
        checkpoint_steps=250, keep_last=5, average_last=5, threads=2,
    ),
}  # fmt: skip


@dataclasses.dataclass
class TrainingConfig(CorpusOptions):
    """Every hyperparameter of a run: the corpus (`CorpusOptions`) and the fields below; the
    `vanilla-transformer-train` tool exposes each field as `--name`."""

    preset: str | None = _f(None, "Start from a preset.", choices=sorted(PRESETS))
    # Data: the corpus fields come from CorpusOptions
    tokenizer: str = _f(
        "data_cache/tokenizer", "Tokenizer folder; trained on the train split if missing."
    )
    tokenizer_vocab_size: int | None = _f(
        None,
        "BPE vocabulary size. A tokenizer the run trains gets it (unset: 8000); an existing "
        "tokenizer folder must have been made for it (unset: any size).",
    )
    max_source_length: int = _f(128, "Drop training pairs whose source is longer (tokens).")
    max_target_length: int = _f(128, "Drop training pairs whose target is longer (tokens).")
    # Model (Table 3)
    d_model: int = _f(512, "Model width d_model.")
    ffn_dim: int = _f(2048, "Feed-forward inner size d_ff.")
    attention_heads: int = _f(8, "Attention heads h.")
    encoder_layers: int = _f(6, "Encoder layers N.")
    decoder_layers: int = _f(6, "Decoder layers N.")
    dropout: float = _f(0.1, "Residual / embedding dropout P_drop.")
    attention_dropout: float = _f(0.0, "Dropout on attention weights.")
    norm_first: bool = _f(False, "Pre-LN instead of the paper's post-LN.")
    max_position_embeddings: int = _f(1024, "Positional table size.")
    # Optimisation (Sections 5.3, 5.4)
    label_smoothing: float = _f(0.1, "Label smoothing epsilon.")
    lr_factor: float = _f(1.0, "Noam schedule factor: peak lr = factor / sqrt(d_model * warmup).")
    warmup_steps: int = _f(4000, "Warm-up updates of the Noam schedule.")
    adam_beta1: float = _f(0.9, "Adam beta1.")
    adam_beta2: float = _f(0.98, "Adam beta2.")
    adam_epsilon: float = _f(1e-9, "Adam epsilon.")
    weight_decay: float = _f(0.0, "Adam L2 weight decay (the paper: none).")
    max_grad_norm: float = _f(0.0, "Clip the gradient norm to this (0: no clipping, the paper).")
    batch_tokens: int = _f(4096, "Padded source+target tokens per micro-batch per process.")
    update_tokens: int = _f(
        50000, "Padded tokens per update (all processes); sets gradient accumulation."
    )
    gradient_accumulation_steps: int = _f(
        0, "Micro-batches per update and process (0: from update_tokens / batch_tokens)."
    )
    # Loop
    max_steps: int = _f(100000, "Stop after this many updates.")
    max_train_minutes: float = _f(0.0, "Stop after this many minutes of training (0: no limit).")
    seed: int = _f(0, "Seed of initialisation, data order and dropout.")
    mixed_precision: str = _f("no", "no, bf16 or fp16 (Accelerate).")
    output_dir: str = _f("runs/default", "Run folder: checkpoints, logs, Hub folder.")
    logging_steps: int = _f(50, "Log the training loss every N updates.")
    eval_steps: int = _f(1000, "Validation loss and BLEU every N updates (0: never).")
    eval_bleu_samples: int = _f(200, "Validation pairs translated for BLEU during training.")
    eval_num_beams: int = _f(4, "Beam size of the BLEU evaluations.")
    eval_batch_size: int = _f(64, "Sentences per generate call.")
    checkpoint_steps: int = _f(1000, "Checkpoint every N updates (0: never by steps).")
    checkpoint_minutes: float = _f(0.0, "Checkpoint every N minutes (0: never by time).")
    keep_last: int = _f(5, "Checkpoints kept (older ones deleted).")
    resume_from_checkpoint: str | None = _f(None, "Checkpoint folder or 'latest' to resume.")
    overwrite_output_dir: bool = _f(
        False, "Delete checkpoints of an earlier run in output_dir instead of refusing to start."
    )
    nan_policy: str = _f("skip", "Non-finite loss/gradients: 'skip' the update or 'stop' saved.")
    debug_nan_at_step: int = _f(
        0, "Testing aid: make the loss NaN at this update attempt, skipped ones counted (0: off)."
    )
    log_with: str = _f("auto", "Trackers: 'auto' (tensorboard if installed), 'none', or names.")
    threads: int = _f(0, "torch.set_num_threads (0: leave torch's default).")
    # Final model
    average_last: int = _f(5, "Average the weights of the last N checkpoints at the end (1: off).")
    final_eval_splits: str = _f("validation,test", "Splits scored at the end with beam search.")
    final_num_beams: int = _f(4, "Beam size of the final evaluation (the paper: 4).")
    final_length_penalty: float = _f(0.6, "Length penalty of the final evaluation (paper: 0.6).")
    hub_folder: str | None = _f(None, "Hub-layout folder of the final model (default: out/hub).")
    save_hub: bool = _f(
        True, "Write the final model as a Hub folder (without a test split: 'Not evaluated')."
    )
    push_to_hub: bool = _f(False, "Upload the Hub folder with hub.push_folder.")
    hub_model_id: str | None = _f(None, "Hub repo id, 'owner/name'.")

    override_resume_options: bool = _f(
        False,
        "On resume, accept options that change the data order or the model (seed, batch sizes, "
        "dataset, tokenizer, model shape, ...) differing from the run's training_config.json.",
    )

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Refuse, before anything starts, every option value the loop cannot honour (a zero
        logging interval divides by zero, a label smoothing of 1.5 trains silently on nonsense).
        The error names the option, the value and what is accepted."""
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            kind = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", "")
            if value is None and spec.default is None:  # unset optional (e.g. vocab size)
                continue
            if kind.startswith("int") and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{spec.name} must be an integer, got {value!r}.")
            if kind.startswith("float") and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise ValueError(f"{spec.name} must be a number, got {value!r}.")
            if kind.startswith("float") and not math.isfinite(value):
                raise ValueError(f"{spec.name} must be a finite number, got {value!r}.")
        for name, low, high, accepted in _RANGES:
            value = getattr(self, name)
            if value is None:
                continue
            if not (low[0] <= value if low[1] else low[0] < value) or not (
                high is None or (value <= high[0] if high[1] else value < high[0])
            ):
                raise ValueError(f"{name} must be {accepted}, got {value!r}.")
        if self.nan_policy not in ("skip", "stop"):
            raise ValueError(f"nan_policy must be 'skip' or 'stop', got {self.nan_policy!r}.")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(
                f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}."
            )
        if self.d_model % self.attention_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by attention_heads "
                f"({self.attention_heads})."
            )
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("push_to_hub needs hub_model_id ('owner/name').")


# (option, (low, low included), (high, high included) or None, what is accepted). Counts that act
# as intervals or divisors must be >= 1; "0 means off" options are >= 0.
_POSITIVE, _NON_NEGATIVE = ((1, True), None, ">= 1"), ((0, True), None, ">= 0")
_RANGES = [
    (name, *spec)
    for names, spec in (
        (
            (
                "tokenizer_vocab_size", "max_source_length", "max_target_length", "d_model",
                "ffn_dim", "attention_heads", "encoder_layers", "decoder_layers",
                "max_position_embeddings", "warmup_steps", "batch_tokens", "update_tokens",
                "max_steps", "logging_steps", "eval_num_beams", "eval_batch_size",
                "average_last", "final_num_beams",
            ),
            _POSITIVE,
        ),
        (
            (
                "gradient_accumulation_steps", "max_train_minutes", "seed", "eval_steps",
                "eval_bleu_samples", "checkpoint_steps", "checkpoint_minutes", "keep_last",
                "debug_nan_at_step", "threads", "weight_decay", "max_grad_norm",
            ),
            _NON_NEGATIVE,
        ),
        (("lr_factor", "adam_epsilon"), ((0, False), None, "> 0")),
        (
            ("label_smoothing", "dropout", "attention_dropout", "adam_beta1", "adam_beta2"),
            ((0, True), (1, False), "in [0, 1)"),
        ),
        (("final_length_penalty",), ((-math.inf, False), None, "a finite number")),
    )
    for name in names
]  # fmt: skip


CPU_SMALL_NOTES = """\
cpu-small was chosen by BLEU on 300 validation verses (greedy) after the number of updates a
2-core CPU makes in 18 minutes (measured per model on 2 pinned cores, calibrated to the
25-minute baseline in docs/data.md), 26 runs on a GPU. Findings: pre-LN beat post-LN by 6 BLEU
(post-LN learns too slowly at these step counts); a 4k joint BPE beat 8k (+1); smaller, faster models won because more
updates matter more than capacity here (d_model 192, 2+2 layers: 23.5 BLEU; 256/3+3: 16;
384/3+3: 11.7); peak lr 3e-3 beat 2e-3 and 1e-3 for the small model; dropout 0 beat 0.1 (+2,
under 4 epochs there is little to overfit); 2,500-token updates about as good as 1,500 and better
than fewer larger ones."""


# Options of one invocation, never inherited by a resumed run from the saved training_config.json.
PER_INVOCATION_OPTIONS = (
    "resume_from_checkpoint",
    "override_resume_options",
    "overwrite_output_dir",
)


def resolve_config(
    preset: str | None = None,
    file_values: dict | None = None,
    saved_values: dict | None = None,
    **overrides,
):
    """Defaults < preset < file values < explicit overrides (each a dict of field names).

    `saved_values` (a resumed run's training_config.json) replace the defaults and the preset:
    defaults < saved < a preset given again (only if it differs from the saved one) < file values
    < overrides. Its per-invocation options (`PER_INVOCATION_OPTIONS`) are not inherited."""
    names = {f.name for f in dataclasses.fields(TrainingConfig)}
    values: dict = {}
    file_values = dict(file_values or {})
    saved = {k: v for k, v in (saved_values or {}).items() if k not in PER_INVOCATION_OPTIONS}
    preset = overrides.get("preset") or file_values.get("preset") or (None if saved else preset)
    if preset is not None and saved and preset == saved.get("preset"):
        preset = None  # the saved values already hold it
    unknown = sorted(set(saved) - names)
    if unknown:
        raise ValueError(f"unknown training options in the run's training_config.json: {unknown}.")
    values.update(saved)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}.")
        values.update(PRESETS[preset], preset=preset)
    for source, where in ((file_values, "config file"), (overrides, "arguments")):
        unknown = sorted(set(source) - names)
        if unknown:
            raise ValueError(f"unknown training options in {where}: {unknown}.")
        values.update(source)
    return TrainingConfig(**values)


RUN_CONFIG_FILE = "training_config.json"


def load_run_config(output_dir: str | Path) -> dict:
    """A run folder's saved options ({} when it has none)."""
    path = Path(output_dir) / RUN_CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}).") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values.")
    return values


def check_resume_options(config: TrainingConfig, saved: dict, run_dir: Path) -> None:
    """Refuse to resume with an option that changes the data order or the model (see
    `run_folder.RESUME_LOCKED_OPTIONS`) unless `override_resume_options`; either way name them."""
    conflicts = resume_conflicts(saved, dataclasses.asdict(config))
    if not conflicts:
        return
    listed = "; ".join(f"{name}: {old!r} in the run, {new!r} now" for name, old, new in conflicts)
    if not config.override_resume_options:
        raise ValueError(
            f"resuming {run_dir} with options that change the data order or the model ({listed}). "
            f"Resume without them (the run's own options are reloaded from "
            f"{run_dir / RUN_CONFIG_FILE}), or pass --override_resume_options to continue as "
            "another run."
        )
    logger.warning(f"resuming with changed options (override_resume_options): {listed}")


def load_config_file(path: str | Path) -> dict:
    """A YAML (.yaml/.yml) or JSON file of `TrainingConfig` fields."""
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith((".yaml", ".yml")):
        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values.")
    return values


# --------------------------------------------------------------------------------------------------
def make_checkpoints_loadable(accelerator: Accelerator, model, tokenizer) -> None:
    """Make every `accelerator.save_state` folder a `from_pretrained` folder too: its config,
    generation config and tokenizer are written beside the weights. Tied aliases (e.g.
    `lm_head.weight`, one storage with `model.shared.weight`) are dropped from the saved state
    dict here, as `save_pretrained` does, instead of by accelerate with a "Removed shared tensor"
    warning on every checkpoint; loading ties them again."""

    def hook(models, weights: list[dict], output_dir: str) -> None:
        for state_dict in weights:
            seen = set()
            for name in list(state_dict):
                tensor = state_dict[name]
                if not isinstance(tensor, torch.Tensor):
                    continue
                storage = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
                if storage in seen:
                    del state_dict[name]
                seen.add(storage)
        if accelerator.is_main_process:
            model.config.save_pretrained(output_dir)
            model.generation_config.save_pretrained(output_dir)
            tokenizer.save_pretrained(output_dir)

    accelerator.register_save_state_pre_hook(hook)


# --------------------------------------------------------------------------------------------------
# Data and model
# --------------------------------------------------------------------------------------------------


def load_data(config: TrainingConfig, accelerator: Accelerator):
    """Corpus, tokenizer (trained and saved on the main process if missing) and tokenised splits."""

    with accelerator.main_process_first():
        corpus = config.load()
        if "train" not in corpus:
            raise ValueError(f"dataset {config.dataset!r} has no train split: {list(corpus)}")
        tok_dir = Path(config.tokenizer)
        if not (tok_dir / "tokenizer.json").is_file():
            if config.resume_from_checkpoint:
                raise FileNotFoundError(
                    f"tokenizer={str(tok_dir)!r} has no tokenizer.json: a resumed run needs the "
                    "tokenizer it was trained with (a new one would not match its embeddings)."
                )
            if accelerator.is_main_process:
                size = config.tokenizer_vocab_size or DEFAULT_VOCAB_SIZE
                logger.info(f"training a {size}-token BPE into {tok_dir}")
                tokenizer = train_tokenizer(
                    corpus["train"],
                    vocab_size=size,
                    languages=[config.src_lang, config.tgt_lang],
                    model_max_length=config.max_position_embeddings,
                )
                tokenizer.save_pretrained(tok_dir)
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        check_tokenizer_size(tokenizer, config, tok_dir)
        tokenized, counts = tokenize_translation_dataset(
            corpus,
            tokenizer,
            config.src_lang,
            config.tgt_lang,
            config.max_source_length,
            config.max_target_length,
        )
    return corpus, tokenizer, tokenized, counts


def check_tokenizer_size(tokenizer, config: TrainingConfig, tok_dir: Path) -> None:
    """A tokenizer folder that exists is used as it is; when its vocabulary is not the size the
    run asks for (`tokenizer_vocab_size`, e.g. from a preset), that is an error, not a silent
    change of recipe."""
    size = requested_vocab_size(tokenizer)
    if config.tokenizer_vocab_size is not None and size != config.tokenizer_vocab_size:
        raise ValueError(
            f"the tokenizer in {tok_dir} was made for {size} tokens but tokenizer_vocab_size is "
            f"{config.tokenizer_vocab_size}"
            + (f" (preset {config.preset!r})" if config.preset else "")
            + f". Pass --tokenizer_vocab_size {size} to use it, or --tokenizer NEW_FOLDER to "
            f"train a {config.tokenizer_vocab_size}-token one."
        )


def tokenizer_fingerprint(folder: str | Path) -> str:
    """sha256 of a tokenizer folder's tokenizer.json (the vocabulary and merges)."""
    return hashlib.sha256((Path(folder) / "tokenizer.json").read_bytes()).hexdigest()


# TrainingConfig fields that are VanillaTransformerConfig fields of the same name and meaning.
MODEL_FIELDS = tuple(
    """d_model encoder_layers decoder_layers dropout attention_dropout norm_first
    max_position_embeddings""".split()
)


def build_model(config: TrainingConfig, vocab_size: int, **overrides):
    """The model a run trains; `overrides` are further `VanillaTransformerConfig` fields (e.g.
    `attention_scaling`, which the attention study varies)."""

    model_config = VanillaTransformerConfig(
        vocab_size=vocab_size,
        **{name: getattr(config, name) for name in MODEL_FIELDS},
        # One setting for both stacks.
        **{f"{stack}_attention_heads": config.attention_heads for stack in ("encoder", "decoder")},
        **{f"{stack}_ffn_dim": config.ffn_dim for stack in ("encoder", "decoder")},
        **overrides,
    )
    return VanillaTransformerForConditionalGeneration(model_config)


def micro_batches(loader, sampler, epoch: int) -> Iterator[tuple[int, dict]]:
    """(epoch, batch) forever, epoch after epoch, resuming inside `epoch` where the sampler's
    state says."""
    while True:
        sampler.set_epoch(epoch)
        yielded = False
        for batch in loader:
            yielded = True
            yield epoch, batch
        if not yielded and not sampler.rank_batches(epoch):  # would loop forever
            raise RuntimeError(f"epoch {epoch} has no batches: the training split is empty.")
        epoch += 1


# --------------------------------------------------------------------------------------------------
# The training step and the training loop (the recipe, the attention study and the benchmark's
# training measurement all train through these two)
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Update:
    """What one applied update saw: its label-smoothed loss per target token and its tokens (all
    processes together)."""

    loss: float
    target_tokens: int
    source_tokens: int


class TrainingCallback:
    """Hooks of `training_loop`. Methods left alone do nothing; `on_update` and `on_skipped`
    return a stop reason (a string ends the loop with it) or None."""

    def on_backward(self, model, state: dict) -> None:
        """The update's gradients are in `.grad` (before the finiteness check and clipping);
        `state["step"]` counts the updates applied so far."""

    def on_update(self, model, state: dict, update: Update) -> str | None:
        """After an applied update; `state["step"]` already counts it."""

    def on_skipped(self, model, state: dict) -> str | None:
        """After a non-finite update was dropped (nan_policy='skip')."""


def training_step(
    model,
    optimizer,
    scheduler,
    accelerator: Accelerator,
    batches: list[dict],
    config: TrainingConfig,
    attempt: int = 1,
    on_backward: Callable[[torch.nn.Module], None] | None = None,
) -> Update | None:
    """One update from `batches` (this process's micro-batches, on the model's device): the
    gradient of the summed label-smoothed token losses divided by the target tokens of the whole
    update (every process, every micro-batch), clipped to `config.max_grad_norm`, then the
    optimizer and `scheduler` (if any) step. A non-finite loss or gradient on any process drops
    the update (gradients zeroed, nothing stepped) and returns None. `attempt` numbers the update
    among all tried, skipped ones included (`config.debug_nan_at_step` poisons that one);
    `on_backward(model)` is called once the update's gradients are in `.grad`."""
    device = batches[0]["labels"].device
    local = torch.tensor(
        [
            sum(int((b["labels"] != -100).sum()) for b in batches),
            sum(int(b["attention_mask"].sum()) for b in batches),
        ],
        dtype=torch.float64,
        device=device,
    )
    target_tokens, source_tokens = accelerator.reduce(local, "sum").tolist()
    # accelerator.backward divides by G and DDP averages over processes: undo both, so that
    # the gradient is d(sum of token losses) / (target tokens of the update).
    grad_accum, world = accelerator.gradient_accumulation_steps, accelerator.num_processes
    scale = grad_accum * world / max(target_tokens, 1.0)
    loss_sum = torch.zeros((), device=device)
    for batch in batches:
        with accelerator.accumulate(model):
            logits = model(**batch).logits
            loss, _, _ = label_smoothed_loss(logits, batch["labels"], config.label_smoothing)
            if attempt == config.debug_nan_at_step:
                loss = loss * float("nan")
            accelerator.backward(loss * scale)
            loss_sum += loss.detach()
    if on_backward is not None:
        on_backward(model)
    # One device-to-host sync for the whole check, not one per parameter.
    checks = [torch.isfinite(loss_sum)]
    checks += [torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None]
    nonfinite = (~torch.stack(checks).all()).double().reshape(1)
    if accelerator.reduce(nonfinite, "sum").item() > 0:
        optimizer.zero_grad(set_to_none=True)
        return None
    if config.max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    loss = accelerator.reduce(loss_sum, "sum").item() / max(target_tokens, 1.0)
    return Update(loss, int(target_tokens), int(source_tokens))


def training_loop(
    model,
    optimizer,
    scheduler,
    accelerator: Accelerator,
    stream: Iterator[tuple[int, dict]],
    config: TrainingConfig,
    state: dict,
    callbacks: list[TrainingCallback] = (),
) -> str:
    """`training_step` after `training_step` on `accelerator.gradient_accumulation_steps`
    micro-batches of `stream` (`micro_batches`) each, until `state["step"]` reaches
    `config.max_steps` or a callback returns a stop reason; returns the reason ("max_steps" or
    the callback's). `state` holds step, epoch, batches_done, tokens, target_tokens and
    skipped_updates, updated in place. A non-finite update is skipped (not counted, the schedule
    not stepped) or, with nan_policy="stop", raises `NonFiniteLossError` with `state` as it was
    before the update."""
    device = next(model.parameters()).device

    def tell(hook: str, *args) -> str | None:
        reasons = [getattr(callback, hook)(model, state, *args) for callback in callbacks]
        return next((reason for reason in reasons if reason), None)

    while state["step"] < config.max_steps:
        # One update: G micro-batches per process, counted before any backward so that every
        # micro-batch is divided by the token count of the whole update, on every process.
        batches, epoch_after = [], state["epoch"]
        consumed = state["batches_done"]
        for _ in range(accelerator.gradient_accumulation_steps):
            epoch_now, batch = next(stream)
            consumed = consumed + 1 if epoch_now == epoch_after else 1
            epoch_after = epoch_now
            batches.append({k: v.to(device) for k, v in batch.items()})
        attempt = state["step"] + state["skipped_updates"] + 1  # skipped ones count
        update = training_step(
            model,
            optimizer,
            scheduler,
            accelerator,
            batches,
            config,
            attempt,
            on_backward=lambda model: tell("on_backward"),
        )
        if update is None:
            state["skipped_updates"] += 1
            logger.warning(
                f"non-finite loss or gradient at update {state['step'] + 1}: "
                f"{'skipped' if config.nan_policy == 'skip' else 'stopping'} "
                f"({state['skipped_updates']} so far)"
            )
            accelerator.log({"train/skipped_updates": state["skipped_updates"]}, step=state["step"])
            if config.nan_policy == "stop":
                raise NonFiniteLossError(f"non-finite loss at update {state['step'] + 1}")
            state["epoch"], state["batches_done"] = epoch_after, consumed
            reason = tell("on_skipped")
        else:
            state["step"] += 1
            state["epoch"], state["batches_done"] = epoch_after, consumed
            state["target_tokens"] += update.target_tokens
            state["tokens"] += update.target_tokens + update.source_tokens
            reason = tell("on_update", update)
        if reason:
            return reason
    return "max_steps"


# --------------------------------------------------------------------------------------------------
# Evaluation during training
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def validation_loss(model, loader, accelerator: Accelerator, epsilon: float) -> dict:
    """Label-smoothed loss and NLL per target token over the whole validation split."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=accelerator.device)
    for batch in loader:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        logits = model(**batch).logits
        loss, nll, count = label_smoothed_loss(logits, batch["labels"], epsilon)
        totals += torch.stack([loss.double(), nll.double(), count.double()])
    totals = accelerator.reduce(totals, "sum")
    model.train(was_training)
    tokens = max(totals[2].item(), 1.0)
    nll = totals[1].item() / tokens
    return {"loss": totals[0].item() / tokens, "nll": nll, "ppl": math.exp(min(nll, 50))}


def bleu_on(
    model,
    tokenizer,
    split,
    config: TrainingConfig,
    samples: int | None,
    beams: int,
    length_penalty: float = 0.6,
    show_progress: bool = False,
) -> dict:

    return evaluate_translation(
        model,
        tokenizer,
        split,
        config.src_lang,
        config.tgt_lang,
        batch_size=config.eval_batch_size,
        num_beams=beams,
        length_penalty=length_penalty,
        max_samples=samples,
        show_progress=show_progress,
    )


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


def _trackers(log_with: str) -> list[str] | None:
    if log_with == "none":
        return None
    if log_with == "auto":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            return None
        return ["tensorboard"]
    return [name.strip() for name in log_with.split(",") if name.strip()]


def _cpu_only() -> bool:
    """Accelerate builds a multi-process CPU group (gloo) only when told `cpu=True`: without it,
    processes started by torchrun on a machine without GPUs each train alone."""
    return not torch.cuda.is_available()


def make_accelerator(config: TrainingConfig, grad_accum: int = 1) -> Accelerator:
    return Accelerator(
        cpu=_cpu_only(),
        gradient_accumulation_steps=grad_accum,
        mixed_precision=config.mixed_precision,
        log_with=_trackers(config.log_with),
        project_dir=config.output_dir,
    )


def append_log(accelerator: Accelerator, run_dir: Path, record: dict) -> None:
    """One JSON line per logged step in `run_dir/train_log.jsonl` (main process), tracker or not."""
    if accelerator.is_main_process:
        with open(run_dir / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class NonFiniteLossError(RuntimeError):
    """Training stopped on a non-finite loss or gradient (nan_policy='stop'); state saved."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM stopped training at an update boundary, after saving a checkpoint."""

    def __init__(self, signal_name: str, checkpoint: Path):
        self.signal_name, self.checkpoint = signal_name, checkpoint
        super().__init__(
            f"{signal_name}: stopped at an update boundary; checkpoint saved in {checkpoint}. "
            "Continue with --resume_from_checkpoint latest."
        )


class _StopSignals:
    """Turns the first SIGINT/SIGTERM into a flag the loop reads at the next update boundary; a
    second one acts as usual (Ctrl-C twice still interrupts at once)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def check_training_data(corpus, counts: dict, config: TrainingConfig) -> None:
    """Refuse an empty training split (training would wait forever for a batch) or an empty
    evaluation split, saying how many pairs each filter removed."""
    empty_dropped = getattr(corpus, "empty_pairs_dropped", {})

    def explain(split: str) -> str:
        c = counts.get(split, {})
        read = c.get("before", 0) + empty_dropped.get(split, 0)
        return (
            f"{read} pairs read; {empty_dropped.get(split, 0)} dropped with an empty side, "
            f"{c.get('source_too_long', 0)} with a source longer than max_source_length="
            f"{config.max_source_length} tokens, {c.get('target_too_long', 0)} with a target "
            f"longer than max_target_length={config.max_target_length} tokens "
            f"({c.get('too_long_before_tokenizing', 0)} of the long ones by their length in "
            "characters, before tokenizing)"
        )

    if counts["train"]["kept"] == 0:
        raise ValueError(
            f"the training split of {config.dataset!r} is empty after filtering: "
            f"{explain('train')}. Raise --max_source_length / --max_target_length or check the "
            "data."
        )
    if "validation" in counts and config.eval_steps > 0 and counts["validation"]["kept"] == 0:
        raise ValueError(
            f"the validation split of {config.dataset!r} is empty after filtering "
            f"({explain('validation')}), and eval_steps={config.eval_steps} evaluates on it. "
            "Pass --eval_steps 0, or fix the split."
        )
    for split in [s.strip() for s in config.final_eval_splits.split(",") if s.strip()]:
        if split in corpus and len(corpus[split]) == 0:
            raise ValueError(
                f"the {split} split of {config.dataset!r} is empty, and final_eval_splits="
                f"{config.final_eval_splits!r} scores it. Leave it out of --final_eval_splits."
            )


def train(config: TrainingConfig) -> dict:
    """Run training as configured; returns the run summary (also written to summary.json).

    The main process holds `output_dir/run.lock` throughout (`run_folder.RunLock`). SIGINT or
    SIGTERM stops at the next update boundary with a checkpoint saved, raising
    `TrainingInterrupted`."""
    config.validate()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    run_dir = Path(config.output_dir)
    state = PartialState(cpu=_cpu_only())
    lock = RunLock(run_dir)
    if state.is_main_process:
        try:
            lock.acquire()
        except (NotADirectoryError, FileExistsError, PermissionError) as err:
            raise OSError(err.errno, f"output_dir {run_dir} cannot be created ({err}).") from None
        if lock.stale_holder:
            logger.warning(f"{run_dir}: {describe_stale(lock.stale_holder)}")
    stop_signals = _StopSignals()
    try:
        return _train_holding_lock(config, run_dir, state.num_processes, stop_signals)
    finally:
        stop_signals.__exit__()
        lock.release()


def _train_holding_lock(
    config: TrainingConfig, run_dir: Path, world: int, stop_signals: _StopSignals
) -> dict:
    grad_accum = config.gradient_accumulation_steps or max(
        1, math.ceil(config.update_tokens / (config.batch_tokens * world))
    )
    accelerator = make_accelerator(config, grad_accum)
    set_seed(config.seed)
    if config.resume_from_checkpoint:
        saved = load_run_config(run_dir)
        if saved:
            check_resume_options(config, saved, run_dir)
        else:
            logger.warning(f"{run_dir / RUN_CONFIG_FILE} is missing: resume options not checked")
    if complete_checkpoints(run_dir) and not config.resume_from_checkpoint:
        if not config.overwrite_output_dir:
            raise FileExistsError(
                f"{run_dir} holds checkpoints of an earlier run: pass --resume_from_checkpoint "
                "latest to continue it, or --overwrite_output_dir to start afresh."
            )
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(run_dir / "checkpoints")
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_CONFIG_FILE).write_text(
            json.dumps(dataclasses.asdict(config), indent=2) + "\n"
        )

    corpus, tokenizer, tokenized, counts = load_data(config, accelerator)
    check_training_data(corpus, counts, config)
    train_set = tokenized["train"]
    model = build_model(config, len(tokenizer))
    collator = make_collator(tokenizer, model)
    sampler = TokenBudgetBatchSampler.from_dataset(
        train_set,
        max_tokens=config.batch_tokens,
        seed=config.seed,
        num_replicas=world,
        rank=accelerator.process_index,
    )
    # The loader is not passed to `prepare`: the sampler shards by rank itself, so the data order
    # is fixed by (seed, epoch) alone and resumes exactly.
    # Its own generator: each new iterator draws a base seed, which must not come from the global
    # RNG that dropout uses, or a resumed run would see other dropout masks.
    loader = DataLoader(
        train_set,
        batch_sampler=sampler,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(config.seed),
    )
    val_loader = None
    if "validation" in tokenized and config.eval_steps > 0:
        val_sampler = TokenBudgetBatchSampler.from_dataset(
            tokenized["validation"],
            max_tokens=config.batch_tokens,
            shuffle=False,
            num_replicas=world,
            rank=accelerator.process_index,
            drop_last=True,
        )
        val_loader = DataLoader(
            tokenized["validation"],
            batch_sampler=val_sampler,
            collate_fn=collator,
            generator=torch.Generator(),
        )
    optimizer, scheduler = build_optimizer_and_scheduler(model, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    # Stepped by hand once per update: `prepare` would step it once per process. Its state goes
    # into trainer_state.json (plain numbers), not `register_for_checkpointing`, whose pickle
    # accelerate loads with weights_only=False.
    unwrapped = accelerator.unwrap_model(model)
    num_parameters = unwrapped.num_parameters()
    make_checkpoints_loadable(accelerator, unwrapped, tokenizer)

    state = {
        "step": 0,
        "epoch": 0,
        "batches_done": 0,
        "tokens": 0,
        "target_tokens": 0,
        "train_seconds": 0.0,
        "skipped_updates": 0,
        "last_eval": None,
        "num_processes": world,
        # The tokenizer folder's path is a locked option; its content is checked by this.
        "tokenizer_sha256": tokenizer_fingerprint(config.tokenizer),
    }
    if config.resume_from_checkpoint:
        path = resolve_checkpoint(run_dir, config.resume_from_checkpoint)
        saved_state = read_trainer_state(path)  # checked before any weight is loaded
        saved_world = saved_state.get("num_processes", world)
        if saved_world != world and not config.override_resume_options:
            raise ValueError(
                f"resuming {path} with another number of processes (num_processes: {saved_world} "
                f"in the run, {world} now) would change the data order. Launch {saved_world} "
                "process(es), or pass --override_resume_options."
            )
        saved_tokenizer = saved_state.get("tokenizer_sha256", state["tokenizer_sha256"])
        if saved_tokenizer != state["tokenizer_sha256"] and not config.override_resume_options:
            raise ValueError(
                f"resuming {path}: {Path(config.tokenizer) / 'tokenizer.json'} changed since the "
                f"run saved it (tokenizer sha256 {saved_tokenizer[:12]}... in the run, "
                f"{state['tokenizer_sha256'][:12]}... now): the embeddings would not match its "
                "ids. Restore the run's tokenizer, or pass --override_resume_options."
            )
        saved_state = load_checkpoint(accelerator, path)
        state.update(saved_state, num_processes=world, tokenizer_sha256=state["tokenizer_sha256"])
        try:
            scheduler.load_state_dict(state.pop("scheduler"))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path / STATE_FILE}: no valid scheduler state ({err!r}).") from None
        logger.info(f"resumed from {path} at update {state['step']}")
    sampler.load_state_dict(
        {"seed": config.seed, "epoch": state["epoch"], "batches_done": state["batches_done"]}
    )
    trackers = _trackers(config.log_with)
    if config.log_with == "auto" and not trackers:
        logger.info(
            "tensorboard is not installed: no tracker; train_log.jsonl and the curves PNG are "
            "written anyway (`pip install tensorboard` to add it)"
        )
    if trackers:
        flat = {
            k: v
            for k, v in dataclasses.asdict(config).items()
            if isinstance(v, (int, float, str, bool))
        }
        accelerator.init_trackers("vanilla_transformer", config=flat)
    logger.info(
        f"{num_parameters:,} parameters; {len(train_set)} training pairs; {world} process(es) x "
        f"{grad_accum} micro-batches of <= {config.batch_tokens} tokens per update",
        main_process_only=True,
    )

    stream = micro_batches(loader, sampler, state["epoch"])
    progress = tqdm(
        total=config.max_steps,
        initial=state["step"],
        desc="train",
        disable=not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    start = time.time() - state["train_seconds"]
    model.train()
    stop_signals.__enter__()  # from here on, SIGINT/SIGTERM stop at an update boundary

    def any_process(flag: bool) -> bool:
        return (
            accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), "sum").item()
            > 0
        )

    def snapshot() -> dict:
        return {**state, "train_seconds": time.time() - start, "scheduler": scheduler.state_dict()}

    class RecipeProgress(TrainingCallback):
        """The recipe's own bookkeeping after each update: the progress bar, logged curves,
        evaluation, checkpoints, the time budget and stop signals."""

        def __init__(self):
            # Throughput counts training only: time spent evaluating and checkpointing is left out.
            self.window_tokens, self.window_start, self.loss_ema = 0, time.time(), None
            self.last_checkpoint_time = time.time()

        def on_update(self, model, state: dict, update: Update) -> str | None:
            self.last_loss, ema = update.loss, self.loss_ema
            self.loss_ema = update.loss if ema is None else 0.95 * ema + 0.05 * update.loss
            self.window_tokens += update.target_tokens + update.source_tokens
            progress.update(1)
            if state["step"] % config.logging_steps == 0:
                self.log(state)
            paused = time.time()
            if config.eval_steps and state["step"] % config.eval_steps == 0:
                state["last_eval"] = evaluate_during_training(
                    model, accelerator, tokenizer, corpus, val_loader, config, state["step"], start
                )
            elapsed_min = (time.time() - start) / 60
            out_of_time = config.max_train_minutes > 0 and elapsed_min >= config.max_train_minutes
            out_of_time = any_process(out_of_time)
            due = (config.checkpoint_steps and state["step"] % config.checkpoint_steps == 0) or (
                config.checkpoint_minutes
                and time.time() - self.last_checkpoint_time >= 60 * config.checkpoint_minutes
            )
            interrupted = any_process(stop_signals.received is not None)
            if (
                any_process(bool(due))
                or out_of_time
                or interrupted
                or state["step"] >= config.max_steps
            ):
                saved_to = save_checkpoint(accelerator, run_dir, snapshot(), config.keep_last)
                self.last_checkpoint_time = time.time()
            self.window_start += time.time() - paused
            if interrupted:
                progress.close()
                accelerator.end_training()
                raise TrainingInterrupted(stop_signals.received or "a stop signal", saved_to)
            return "max_train_minutes" if out_of_time else None

        def log(self, state: dict) -> None:
            elapsed = time.time() - self.window_start
            tok_s = self.window_tokens / max(elapsed, 1e-9)
            lr = scheduler.get_last_lr()[0]
            progress.set_postfix(loss=f"{self.loss_ema:.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:.0f}")
            if config.max_train_minutes > 0:
                # Bounded by minutes: the bar's total (and so its ETA) is the number of updates
                # the time budget allows at the pace so far.
                elapsed_s = max(time.time() - start, 1e-9)
                by_time = int(state["step"] * 60 * config.max_train_minutes / elapsed_s)
                progress.total = max(state["step"], min(config.max_steps, by_time))
                progress.refresh()
            record = {
                "minutes": (time.time() - start) / 60,
                "train/loss": self.last_loss,
                "train/loss_ema": self.loss_ema,
                "train/lr": lr,
                "train/tokens_per_s": tok_s,
                "train/epoch": state["epoch"],
            }
            accelerator.log(record, step=state["step"])
            append_log(accelerator, run_dir, {"step": state["step"], **record})
            self.window_tokens, self.window_start = 0, time.time()

    try:
        stop_reason = training_loop(
            model, optimizer, scheduler, accelerator, stream, config, state, [RecipeProgress()]
        )
    except NonFiniteLossError as err:
        save_checkpoint(accelerator, run_dir, snapshot(), config.keep_last)
        accelerator.end_training()
        raise NonFiniteLossError(f"{err}; state saved in {run_dir}") from None
    stop_signals.__exit__()
    progress.close()
    state["train_seconds"] = time.time() - start
    summary = finish(
        model, accelerator, tokenizer, corpus, counts, config, state, stop_reason, num_parameters
    )
    accelerator.end_training()
    return summary


def evaluate_during_training(
    model, accelerator, tokenizer, corpus, val_loader, config, step, start: float | None = None
):
    if val_loader is None:
        return None
    metrics = {
        f"val/{k}": v
        for k, v in validation_loss(model, val_loader, accelerator, config.label_smoothing).items()
    }
    if accelerator.is_main_process and config.eval_bleu_samples > 0:
        scores = bleu_on(
            accelerator.unwrap_model(model),
            tokenizer,
            corpus["validation"],
            config,
            config.eval_bleu_samples,
            config.eval_num_beams,
        )
        metrics.update({"val/bleu": scores["bleu"], "val/chrf": scores["chrf"]})
    accelerator.wait_for_everyone()
    accelerator.log(metrics, step=step)
    minutes = {"minutes": (time.time() - start) / 60} if start is not None else {}
    append_log(accelerator, Path(config.output_dir), {"step": step, **minutes, **metrics})
    if accelerator.is_main_process:
        text = " ".join(f"{k}={v:.3f}" for k, v in metrics.items())
        tqdm.write(f"[update {step}] {text}")
    return metrics


def finish(
    model, accelerator, tokenizer, corpus, counts, config, state, stop_reason, num_parameters
) -> dict:
    """Average the last checkpoints, score the final splits, write the Hub folder and summary."""

    run_dir = Path(config.output_dir)
    model = accelerator.unwrap_model(model)
    summary = {
        "stop_reason": stop_reason,
        "steps": state["step"],
        "tokens": state["tokens"],
        "target_tokens": state["target_tokens"],
        "train_seconds": state["train_seconds"],
        "skipped_updates": state["skipped_updates"],
        "num_parameters": num_parameters,
        "train_pairs": counts["train"]["kept"],
        "hardware": hardware_description(accelerator.device, accelerator.num_processes),
        "last_eval": state["last_eval"],
        "scores": {},
    }
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return summary
    checkpoints = complete_checkpoints(run_dir)[-config.average_last :]
    if config.average_last > 1 and len(checkpoints) > 1:
        load_averaged_weights(model, average_checkpoints(checkpoints, show_progress=True))
        summary["averaging"] = (
            f"mean of the last {len(checkpoints)} checkpoints "
            f"({', '.join(p.name for p in checkpoints)})"
        )
    for split in [s.strip() for s in config.final_eval_splits.split(",") if s.strip()]:
        if split in corpus:
            summary["scores"][split] = bleu_on(
                model,
                tokenizer,
                corpus[split],
                config,
                None,
                config.final_num_beams,
                config.final_length_penalty,
                show_progress=True,
            )
            tqdm.write(
                f"[final] {split}: BLEU {summary['scores'][split]['bleu']:.2f} chrF "
                f"{summary['scores'][split]['chrf']:.2f}"
            )
    # Always: a run without a test split still yields a loadable, publishable model (its card
    # says "Not evaluated").
    if config.save_hub:
        summary["hub_folder"] = str(save_final_hub_folder(model, tokenizer, config, summary))
        if config.push_to_hub:
            push_folder(summary["hub_folder"], config.hub_model_id)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    curves = plot_training_curves(run_dir)
    if curves is not None:
        logger.info(f"training curves: {curves}")
    accelerator.wait_for_everyone()
    return summary


def save_final_hub_folder(model, tokenizer, config: TrainingConfig, summary: dict) -> Path:

    test = summary["scores"].get("test", {})
    val = summary["scores"].get("validation", {})
    if config.dataset == "bible":
        readme = Path(config.bible_cache_dir) / f"{config.english}-rv1909" / "README.md"
        info = bible_card_info(config.english, readme.read_text() if readme.is_file() else None)
    else:
        info = {
            "src_lang": config.src_lang,
            "tgt_lang": config.tgt_lang,
            "dataset_name": config.dataset,
            "dataset_id": Path(config.dataset).name or "local",
            "dataset_description": f"Parallel corpus loaded from `{config.dataset}`.",
            "intended_use": "Research and demonstration of the original Transformer recipe.",
            "limitations": ["Trained only on the data above, for a short time."],
            "example_source": "Hello.",
        }
    preset = config.preset or "custom"
    info.update(
        model_name=f"vanilla-transformer-{preset}-{config.src_lang}-{config.tgt_lang}",
        # Until `vanilla-transformer-push` writes the target repo into the card.
        repo_id=config.hub_model_id
        or f"your-name/vanilla-transformer-{preset}-{config.src_lang}-{config.tgt_lang}",
        train_samples=summary["train_pairs"],
        train_steps=summary["steps"],
        train_tokens=summary["tokens"],
        hardware=summary["hardware"],
        training_time=summary["train_seconds"],
        hyperparameters={
            k: v for k, v in dataclasses.asdict(config).items() if k in HPARAMS and v is not None
        },
        test_bleu=test.get("bleu"),
        test_chrf=test.get("chrf"),
        test_samples=test.get("num_samples"),
        bleu_signature=test.get("bleu_signature"),
        chrf_signature=test.get("chrf_signature"),
        num_beams=config.final_num_beams if test else None,
        length_penalty=config.final_length_penalty if test else None,
        validation_bleu=val.get("bleu"),
        validation_chrf=val.get("chrf"),
        validation_samples=val.get("num_samples"),
        averaging=summary.get("averaging"),
    )
    folder = Path(config.hub_folder or Path(config.output_dir) / "hub")
    return save_hub_folder(model, tokenizer, folder, info)


HPARAMS = (
    "preset",
    "d_model",
    "ffn_dim",
    "attention_heads",
    "encoder_layers",
    "decoder_layers",
    "dropout",
    "norm_first",
    "label_smoothing",
    "lr_factor",
    "warmup_steps",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "batch_tokens",
    "update_tokens",
    "max_source_length",
    "max_target_length",
    "tokenizer_vocab_size",
    "max_steps",
    "max_train_minutes",
    "seed",
    "mixed_precision",
)
