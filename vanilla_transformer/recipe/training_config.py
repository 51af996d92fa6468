"""The options of a training run: `TrainingConfig` (every hyperparameter, validated once when it
is built), the `PRESETS` (the paper's base and big, and `cpu-small`, the main job's recipe), and how
a run's options are resolved (`resolve_config`: defaults < preset < file < flags, or a resumed
run's own `training_config.json`) and checked on resume (`check_resume_options`)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import yaml
from accelerate.logging import get_logger

from .options import CorpusOptions, option
from .run_folder import RESUME_LOCKED_OPTIONS, RUN_CONFIG_FILE, resume_conflicts

logger = get_logger(__name__)

_f = option


PRESETS: dict[str, dict] = {
    # Table 3, base: 512/2048/8 heads/6+6, P_drop 0.1, ~25k source + 25k target tokens per update,
    # 100k updates, warm-up 4000; the 5 last checkpoints averaged (Section 6.1).
    "base": dict(
        d_model=512, ffn_dim=2048, attention_heads=8, encoder_layers=6, decoder_layers=6,
        dropout=0.1, norm_first=False, tokenizer_vocab_size=37000, update_tokens=50000,
        warmup_steps=4000, lr_factor=1.0, max_steps=100000, checkpoint_steps=5000,
        average_last=5, output_dir="runs/base",
    ),
    # Table 3, big: 1024/4096/16 heads, P_drop 0.3, 300k updates, the 20 last checkpoints.
    "big": dict(
        d_model=1024, ffn_dim=4096, attention_heads=16, encoder_layers=6, decoder_layers=6,
        dropout=0.3, norm_first=False, tokenizer_vocab_size=37000, update_tokens=50000,
        warmup_steps=4000, lr_factor=1.0, max_steps=300000, checkpoint_steps=10000,
        average_last=20, output_dir="runs/big",
    ),
    # Tuned for 2 CPU cores (see CPU_SMALL_NOTES): small, shallow and fast, pre-LN, a high peak lr
    # (3e-3 = 0.83 / sqrt(192 * 400)), no dropout, many small updates. Bounded by updates, not
    # minutes, so that every machine trains the same model: 5,500 updates took 20 minutes on the
    # reference machine (Intel Xeon, 2 cores); a slower machine takes longer, it does not score less.
    # It is the main job's recipe (scripts/main.sh runs exactly this): its run folder, and the 4k
    # BPE tokenizer that a run trains there when missing (what scripts/train_tokenizer.py
    # --vocab_size 4000 --model_max_length 256 makes) and reuses afterwards.
    "cpu-small": dict(
        output_dir="runs/cpu-small", tokenizer="data_cache/tokenizer-bpe4k",
        bible_cache_dir="data_cache/bible", final_eval_splits="validation,test",
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
    output_dir: str = _f(
        "runs/default", "Run folder: checkpoints, logs, Hub folder (a preset's: runs/PRESET)."
    )
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
    log_with: str = _f("auto", "Trackers: 'auto' (tensorboard if installed), 'none', or names.")
    threads: int = _f(0, "torch.set_num_threads (0: leave torch's default).")
    # Final model
    average_last: int = _f(5, "Average the weights of the last N checkpoints at the end (1: off).")
    final_eval_splits: str = _f("validation,test", "Splits scored at the end with beam search.")
    final_num_beams: int = _f(4, "Beam size of the final evaluation (the paper: 4).")
    final_length_penalty: float = _f(0.6, "Length penalty of the final evaluation (paper: 0.6).")
    hub_folder: str | None = _f(
        None, "Hub-layout folder of the final model (default: OUTPUT_DIR/hub)."
    )
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

    @property
    def final_hub_folder(self) -> Path:
        """Where the final model's Hub folder goes: `hub_folder`, else `output_dir/hub`."""
        return Path(self.hub_folder or Path(self.output_dir) / "hub")

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
                "threads", "weight_decay", "max_grad_norm",
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


def default_output_dir(preset: str | None) -> str:
    """The run folder of a run that names none: the preset's own (runs/PRESET), else
    `TrainingConfig.output_dir`."""
    return PRESETS.get(preset or "", {}).get("output_dir", TrainingConfig.output_dir)


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


def resume_options(config: TrainingConfig) -> dict:
    """The options a resumed run must keep (`run_folder.RESUME_LOCKED_OPTIONS`), as recorded in
    each checkpoint's trainer state: a hand-edited `training_config.json` is then still caught."""
    values = dataclasses.asdict(config)
    return {name: values[name] for name in RESUME_LOCKED_OPTIONS if name in values}


def check_checkpoint_options(config: TrainingConfig, recorded: dict | None, path: Path) -> None:
    """Refuse to resume checkpoint `path` when the options it was trained with (`recorded`, from
    its trainer state; None for a checkpoint saved before they were recorded) differ from the
    run's options now in a way that changes the data order or the model, unless
    `override_resume_options`."""
    conflicts = resume_conflicts(recorded or {}, dataclasses.asdict(config))
    if not conflicts or config.override_resume_options:
        return
    listed = "; ".join(
        f"{name}: {old!r} in the checkpoint, {new!r} now" for name, old, new in conflicts
    )
    raise ValueError(
        f"resuming {path} with options that differ from those it was trained with ({listed}); "
        f"was {Path(config.output_dir) / RUN_CONFIG_FILE} edited by hand? Restore the values, or "
        "pass --override_resume_options to continue as another run."
    )


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
