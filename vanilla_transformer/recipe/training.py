"""The run driver of the training recipe (Section 5): `train(config)`.

`train` takes the run folder's lock and hands off to `_train_holding_lock`, which reads top to
bottom: prepare the run folder (resume checks, `training_config.json`), load the data and the
tokenizer, build the model, loaders and optimizer, start or resume the `TrainState`, run the one
loop (`loop.training_loop`) with the recipe's callbacks (`training_callbacks`: progress, evaluation,
stop signals, time budget, checkpoints), then `finish`: the checkpoint average (never silently
worse), the final scores, the Hub folder and summary.json. See docs/training.md.

The other homes: the options and presets are `training_config.py`; the loss, schedule, step and
loop are `loop.py`. Their public names are importable from here too.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import AutoTokenizer

from .. import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from ..errors import UserError
from ..hardware import hardware_description
from ..publishing.hub import push_folder, save_hub_folder
from .bible import bible_card_info
from .checkpoints import (
    STATE_FILE,
    average_unless_worse,
    checkpoints_to_average,
    complete_checkpoints,
    drop_tied_aliases,
    load_checkpoint,
    read_trainer_state,
    resolve_checkpoint,
    tied_weights,
)
from .curves import plot_training_curves
from .data import TokenBudgetBatchSampler, make_collator, tokenize_translation_dataset
from .loop import (  # noqa: F401  (re-exported: the loop's public names)
    NonFiniteLossError,
    TrainingCallback,
    TrainState,
    Update,
    build_optimizer_and_scheduler,
    label_smoothed_loss,
    micro_batches,
    noam_lambda,
    training_loop,
    training_step,
)
from .run_folder import RunLock, describe_stale
from .tokenization import requested_vocab_size, train_tokenizer
from .training_callbacks import (  # noqa: F401  (TrainingInterrupted, validation_loss re-exported)
    Checkpointing,
    Evaluation,
    ProgressLog,
    StopSignals,
    Stopwatch,
    TimeBudget,
    TrainingInterrupted,
    bleu_on,
    validation_loss,
)
from .training_config import (  # noqa: F401  (re-exported: the options' public names)
    CPU_SMALL_NOTES,
    HPARAMS,
    PRESETS,
    RUN_CONFIG_FILE,
    TrainingConfig,
    check_checkpoint_options,
    check_resume_options,
    default_output_dir,
    load_config_file,
    load_run_config,
    resolve_config,
    resume_options,
)

logger = get_logger(__name__)

DEFAULT_VOCAB_SIZE = 8000  # a tokenizer trained by a run without tokenizer_vocab_size


# --------------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------------


def train(config: TrainingConfig, callbacks: list[TrainingCallback] = ()) -> dict:
    """Run training as configured; returns the run summary (also written to summary.json).
    `callbacks` are told every update after the recipe's own (e.g. a test's fault injection).

    The main process holds `output_dir/run.lock` throughout (`run_folder.RunLock`). SIGINT or
    SIGTERM stops at the next update boundary with a checkpoint saved, raising
    `TrainingInterrupted`. Resuming a run that has no checkpoint is a `UserError`, raised before
    anything is written."""
    run_dir = Path(config.output_dir)
    if config.resume_from_checkpoint:
        check_resumable(run_dir, config.resume_from_checkpoint)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    state = PartialState(cpu=_cpu_only())
    if not state.is_main_process:
        quiet_this_process()
    lock = RunLock(run_dir)
    if state.is_main_process:
        try:
            lock.acquire()
        except (NotADirectoryError, FileExistsError, PermissionError) as err:
            raise OSError(err.errno, f"output_dir {run_dir} cannot be created ({err}).") from None
        if lock.stale_holder:
            logger.warning(f"{run_dir}: {describe_stale(lock.stale_holder)}")
    try:
        return _train_holding_lock(config, run_dir, state.num_processes, list(callbacks))
    finally:
        lock.release()


def quiet_this_process() -> None:
    """On processes other than the main one (under torchrun / accelerate launch), only warnings
    and errors are logged and the datasets progress bars are off: the main process reports."""
    import datasets

    logging.getLogger("vanilla_transformer").setLevel(logging.WARNING)
    datasets.disable_progress_bars()


def _train_holding_lock(config, run_dir: Path, world: int, extra_callbacks: list) -> dict:
    accelerator = make_accelerator(config, gradient_accumulation(config, world))
    set_seed(config.seed)
    prepare_run_folder(config, run_dir, accelerator)
    corpus, tokenizer, tokenized, counts = load_data(config, accelerator)
    check_training_data(corpus, counts, config)
    model = build_model(config, len(tokenizer))
    sampler, loader, val_loader = make_loaders(config, tokenized, tokenizer, model, accelerator)
    optimizer, scheduler = build_optimizer_and_scheduler(model, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    # The scheduler is stepped by hand once per update (`prepare` would step it once per
    # process); its state goes into trainer_state.json as plain numbers.
    unwrapped = accelerator.unwrap_model(model)
    make_checkpoints_loadable(accelerator, unwrapped, tokenizer)
    state = start_state(config, accelerator, run_dir, scheduler, world)
    sampler.load_state_dict(
        {"seed": config.seed, "epoch": state.epoch, "batches_done": state.batches_done}
    )
    start_trackers(config, accelerator)
    logger.info(
        f"{unwrapped.num_parameters():,} parameters; {len(tokenized['train'])} training pairs; "
        f"{world} process(es) x {accelerator.gradient_accumulation_steps} micro-batches of <= "
        f"{config.batch_tokens} tokens per update",
        main_process_only=True,
    )
    stopwatch = Stopwatch(state.train_seconds)
    checkpoints = Checkpointing(config, accelerator, scheduler, stopwatch)
    model.train()
    # From here on, SIGINT/SIGTERM stop at an update boundary; log records go above the bar.
    with StopSignals(accelerator) as signals, logging_redirect_tqdm():
        callbacks = [
            ProgressLog(config, accelerator, scheduler, stopwatch, state),
            Evaluation(config, accelerator, tokenizer, corpus, val_loader, stopwatch),
            signals,
            TimeBudget(config, accelerator, stopwatch),
            checkpoints,
            *extra_callbacks,
        ]
        stream = micro_batches(loader, sampler, state.epoch)
        stop_reason = run_loop(model, optimizer, scheduler, accelerator, stream, config, state,
                               callbacks, checkpoints)  # fmt: skip
    if stop_reason in StopSignals.REASONS:
        accelerator.end_training()
        raise TrainingInterrupted(stop_reason, checkpoints.last_saved)
    state.train_seconds = stopwatch.seconds()
    summary = finish(model, accelerator, tokenizer, corpus, counts, config, state, stop_reason)
    accelerator.end_training()
    return summary


def run_loop(model, optimizer, scheduler, accelerator, stream, config, state, callbacks, saver):
    """`training_loop`; on a non-finite update with nan_policy='stop', the state is saved (as it
    was before that update) and the error names the run folder."""
    try:
        return training_loop(
            model, optimizer, scheduler, accelerator, stream, config, state, callbacks
        )
    except NonFiniteLossError as err:
        saver.save(state)
        accelerator.end_training()
        raise NonFiniteLossError(f"{err}; state saved in {config.output_dir}") from None


# --------------------------------------------------------------------------------------------------
# The run folder and resuming
# --------------------------------------------------------------------------------------------------


def check_resumable(run_dir: Path, which: str) -> None:
    """Refuse, before anything is written, to resume a run that has no such checkpoint."""
    try:
        resolve_checkpoint(run_dir, which)
    except FileNotFoundError as err:
        raise UserError(
            f"nothing to resume in {run_dir} ({err}). Check --output_dir, or leave out "
            "--resume_from_checkpoint to start a new run."
        ) from None


def prepare_run_folder(config: TrainingConfig, run_dir: Path, accelerator: Accelerator) -> None:
    """Check a resumed run's options; refuse (or, with overwrite_output_dir, delete) checkpoints
    of an earlier run; write the run's options to training_config.json."""
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


def start_state(config, accelerator, run_dir: Path, scheduler, world: int) -> TrainState:
    """A new run's `TrainState`, or the resumed checkpoint's (its weights, optimizer, RNG and
    scheduler states loaded), after refusing what would not continue the same run: another
    number of processes, a changed tokenizer, or options that differ from the checkpoint's."""
    state = TrainState(
        num_processes=world,
        # The tokenizer folder's path is a locked option; its content is checked by this.
        tokenizer_sha256=tokenizer_fingerprint(config.tokenizer),
        resume_options=resume_options(config),
    )
    if not config.resume_from_checkpoint:
        return state
    path = resolve_checkpoint(run_dir, config.resume_from_checkpoint)
    saved = read_trainer_state(path)  # checked before any weight is loaded
    check_same_run(config, saved, state, path)
    saved = load_checkpoint(accelerator, path)
    try:
        scheduler.load_state_dict(saved.pop("scheduler"))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path / STATE_FILE}: no valid scheduler state ({err!r}).") from None
    logger.info(f"resumed from {path} at update {saved['step']}")
    return dataclasses.replace(
        TrainState.from_saved(saved),
        num_processes=world,
        tokenizer_sha256=state.tokenizer_sha256,
        resume_options=state.resume_options,
    )


# What a resumed run must share with the run it resumes: trainer-state field -> the refusal.
RESUME_INVARIANTS = {
    "num_processes": (
        "resuming {path} with another number of processes (num_processes: {saved} in the run, "
        "{now} now) would change the data order. Launch {saved} process(es), or pass "
        "--override_resume_options."
    ),
    "tokenizer_sha256": (
        "resuming {path}: {tokenizer} changed since the run saved it (tokenizer sha256 "
        "{saved:.12}... in the run, {now:.12}... now): the embeddings would not match its ids. "
        "Restore the run's tokenizer, or pass --override_resume_options."
    ),
}


def check_same_run(config, saved: dict, now: TrainState, path: Path) -> None:
    """Refuse to resume checkpoint `path` (its trainer state `saved`) with another number of
    processes, another tokenizer (`RESUME_INVARIANTS`), or options it was not trained with (a
    hand-edited training_config.json), unless `override_resume_options`."""
    if config.override_resume_options:
        return
    for field, refusal in RESUME_INVARIANTS.items():
        value = getattr(now, field)
        if saved.get(field, value) != value:
            tokenizer = Path(config.tokenizer) / "tokenizer.json"
            raise ValueError(
                refusal.format(
                    path=path, saved=str(saved[field]), now=str(value), tokenizer=tokenizer
                )
            )
    check_checkpoint_options(config, saved.get("resume_options"), path)


def make_checkpoints_loadable(accelerator: Accelerator, model, tokenizer) -> None:
    """Make every `accelerator.save_state` folder a `from_pretrained` folder too: its config,
    generation config and tokenizer are written beside the weights. Tied aliases (`tied_weights`:
    e.g. `lm_head.weight`, one storage with `model.shared.weight`) are dropped from the saved state
    dict here, as `save_pretrained` does, instead of by accelerate with a "Removed shared tensor"
    warning on every checkpoint; loading ties them again."""
    aliases = tied_weights(model)

    def hook(models, weights: list[dict], output_dir: str) -> None:
        for state_dict in weights:
            drop_tied_aliases(state_dict, aliases)
        if accelerator.is_main_process:
            model.config.save_pretrained(output_dir)
            model.generation_config.save_pretrained(output_dir)
            tokenizer.save_pretrained(output_dir)

    accelerator.register_save_state_pre_hook(hook)


def start_trackers(config: TrainingConfig, accelerator: Accelerator) -> None:
    """The experiment trackers (tensorboard when installed, with log_with='auto')."""
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


# --------------------------------------------------------------------------------------------------
# Data, model, loaders
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


def gradient_accumulation(config: TrainingConfig, world: int) -> int:
    """Micro-batches per update and process: `gradient_accumulation_steps`, or enough to reach
    `update_tokens` with `batch_tokens` per micro-batch on `world` processes."""
    return config.gradient_accumulation_steps or max(
        1, math.ceil(config.update_tokens / (config.batch_tokens * world))
    )


def make_loaders(config, tokenized, tokenizer, model, accelerator: Accelerator):
    """(training sampler, training loader, validation loader or None). The loaders are not passed
    to `prepare`: the token-budget sampler shards by rank itself, so the data order is fixed by
    (seed, epoch) alone and resumes exactly."""
    world, rank = accelerator.num_processes, accelerator.process_index
    collator = make_collator(tokenizer, model)
    train_set = tokenized["train"]
    sampler = TokenBudgetBatchSampler.from_dataset(
        train_set, max_tokens=config.batch_tokens, seed=config.seed, num_replicas=world, rank=rank
    )
    # Its own generator: each new iterator draws a base seed, which must not come from the global
    # RNG that dropout uses, or a resumed run would see other dropout masks.
    loader = DataLoader(
        train_set,
        batch_sampler=sampler,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(config.seed),
    )
    if "validation" not in tokenized or config.eval_steps <= 0:
        return sampler, loader, None
    val_sampler = TokenBudgetBatchSampler.from_dataset(
        tokenized["validation"], max_tokens=config.batch_tokens, shuffle=False,
        num_replicas=world, rank=rank, drop_last=True,
    )  # fmt: skip
    val_loader = DataLoader(
        tokenized["validation"],
        batch_sampler=val_sampler,
        collate_fn=collator,
        generator=torch.Generator(),
    )
    return sampler, loader, val_loader


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


# --------------------------------------------------------------------------------------------------
# The final model: average, scores, Hub folder, summary
# --------------------------------------------------------------------------------------------------


def finish(
    model, accelerator, tokenizer, corpus, counts, config, state: TrainState, stop_reason: str
) -> dict:
    """Average the last checkpoints, score the final splits, write the Hub folder and summary."""

    run_dir = Path(config.output_dir)
    model = accelerator.unwrap_model(model)
    summary = {
        "stop_reason": stop_reason,
        "steps": state.step,
        "tokens": state.tokens,
        "target_tokens": state.target_tokens,
        "train_seconds": state.train_seconds,
        "skipped_updates": state.skipped_updates,
        "num_parameters": model.num_parameters(),
        "train_pairs": counts["train"]["kept"],
        "hardware": hardware_description(accelerator.device, accelerator.num_processes),
        "last_eval": state.last_eval,
        "scores": {},
    }
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return summary
    summary.update(average_final_model(model, tokenizer, corpus, config, run_dir))
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


def _validation_scores(model, tokenizer, corpus, config: TrainingConfig) -> dict:
    """BLEU/chrF on the validation pairs the run evaluates on during training."""
    scores = bleu_on(
        model, tokenizer, corpus["validation"], config, config.eval_bleu_samples,
        config.eval_num_beams,
    )  # fmt: skip
    return {"bleu": scores["bleu"], "chrf": scores["chrf"], "num_samples": scores["num_samples"]}


def average_final_model(model, tokenizer, corpus, config: TrainingConfig, run_dir: Path) -> dict:
    """Section 6.1's checkpoint average, never silently worse (issue 19.2): only checkpoints
    written after the warm-up are averaged, and the average becomes the final model only when it
    does not score below the newest checkpoint (`model`'s weights) on validation
    (`checkpoints.average_unless_worse`). Returns the summary's `averaging` (the card's text) and
    `averaging_check` (both scores and what was kept)."""
    if config.average_last <= 1:
        return {}
    chosen, in_warmup = checkpoints_to_average(
        complete_checkpoints(run_dir), config.average_last, config.warmup_steps
    )
    check: dict = {"left_out_in_warmup": [p.name for p in in_warmup]}
    if in_warmup:
        tqdm.write(
            f"[final] not averaged: {', '.join(p.name for p in in_warmup)} (inside the "
            f"{config.warmup_steps}-update warm-up)"
        )
    if len(chosen) < 2:
        tqdm.write("[final] no checkpoint average: fewer than 2 checkpoints past the warm-up")
        return {"averaging": None, "averaging_check": {**check, "averaged": [], "kept": "newest"}}
    score = None
    if "validation" in corpus and config.eval_bleu_samples > 0:
        score = functools.partial(
            _validation_scores, tokenizer=tokenizer, corpus=corpus, config=config
        )
    check.update(average_unless_worse(model, chosen, score, show_progress=True))
    names = ", ".join(check["averaged"])
    if check["kept"] == "newest":
        new, avg = check["newest_scores"], check["average_scores"]
        tqdm.write(
            f"[final] the average of {names} scores below the newest checkpoint on validation "
            f"(BLEU {avg['bleu']:.2f} chrF {avg['chrf']:.2f} < BLEU {new['bleu']:.2f} chrF "
            f"{new['chrf']:.2f}): the newest checkpoint is the final model"
        )
        return {"averaging": None, "averaging_check": check}
    return {
        "averaging": f"mean of the last {len(chosen)} checkpoints ({names})",
        "averaging_check": check,
    }


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
    return save_hub_folder(model, tokenizer, config.final_hub_folder, info)
