"""The recipe's bookkeeping around the one loop, as `TrainingCallback`s of `loop.training_loop`, in
the order the driver (`training.train`) hands them to it:

- `ProgressLog`: the progress bar, the logged training curves (`train_log.jsonl`, trackers);
- `Evaluation`: validation loss and BLEU/chrF every `eval_steps` updates;
- `StopSignals`: the first SIGINT/SIGTERM stops at the next update boundary (a `with` block);
- `TimeBudget`: stops after `max_train_minutes`;
- `Checkpointing`: a checkpoint every `checkpoint_steps` updates / `checkpoint_minutes`, and at the
  end, however the loop ends.

They share a `Stopwatch` (the run's training time, with evaluation and checkpoint time told apart
so that throughput counts training alone). Flags that decide a stop are agreed by all processes
(`any_process`), so that every process stops at the same update.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..translation import eval_mode
from .checkpoints import save_checkpoint
from .evaluation import evaluate_translation
from .loop import TrainingCallback, TrainState, Update, label_smoothed_loss
from .training_config import TrainingConfig


class Stopwatch:
    """The run's training time (resumed runs continue from their saved `train_seconds`), and the
    part of it spent evaluating and checkpointing (`paused`)."""

    def __init__(self, seconds_before: float = 0.0):
        self.start = time.time() - seconds_before
        self.paused_seconds = 0.0

    def seconds(self) -> float:
        return time.time() - self.start

    def minutes(self) -> float:
        return self.seconds() / 60

    @contextlib.contextmanager
    def paused(self):
        """Time spent in this block is left out of the throughput."""
        began = time.time()
        try:
            yield
        finally:
            self.paused_seconds += time.time() - began


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """True on every process when `flag` is true on any of them (a collective call)."""
    total = accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), "sum")
    return total.item() > 0


def append_log(accelerator: Accelerator, run_dir: Path, record: dict) -> None:
    """One JSON line per logged step in `run_dir/train_log.jsonl` (main process), tracker or not."""
    if accelerator.is_main_process:
        with open(run_dir / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def snapshot(state: TrainState, stopwatch: Stopwatch, scheduler) -> dict:
    """What a checkpoint's trainer_state.json holds: the state, the training time so far and the
    scheduler's state (plain numbers, not a pickle)."""
    return {
        **vars(state),
        "train_seconds": stopwatch.seconds(),
        "scheduler": scheduler.state_dict(),
    }


# --------------------------------------------------------------------------------------------------
# Progress and the logged curves
# --------------------------------------------------------------------------------------------------


class ProgressLog(TrainingCallback):
    """The progress bar (loss EMA, learning rate, tokens/s of training alone) and, every
    `logging_steps` updates, a record in train_log.jsonl and the trackers."""

    def __init__(self, config, accelerator, scheduler, stopwatch: Stopwatch, state: TrainState):
        self.config, self.accelerator, self.scheduler = config, accelerator, scheduler
        self.stopwatch, self.run_dir = stopwatch, Path(config.output_dir)
        self.bar = tqdm(
            total=config.max_steps,
            initial=state.step,
            desc="train",
            disable=not accelerator.is_local_main_process,
            dynamic_ncols=True,
        )
        self.last_loss, self.loss_ema = None, None
        self._new_window()

    def _new_window(self) -> None:
        self.window_tokens, self.window_start = 0, time.time()
        self.window_paused = self.stopwatch.paused_seconds

    def on_update(self, model, state: TrainState, update: Update) -> None:
        ema = self.loss_ema
        self.last_loss = update.loss
        self.loss_ema = update.loss if ema is None else 0.95 * ema + 0.05 * update.loss
        self.window_tokens += update.target_tokens + update.source_tokens
        self.bar.update(1)
        if state.step % self.config.logging_steps == 0:
            self.log(state)

    def log(self, state: TrainState) -> None:
        paused = self.stopwatch.paused_seconds - self.window_paused
        tok_s = self.window_tokens / max(time.time() - self.window_start - paused, 1e-9)
        lr = self.scheduler.get_last_lr()[0]
        self.bar.set_postfix(loss=f"{self.loss_ema:.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:.0f}")
        if self.config.max_train_minutes > 0:
            # Bounded by minutes: the bar's total (and so its ETA) is the number of updates the
            # time budget allows at the pace so far.
            elapsed_s = max(self.stopwatch.seconds(), 1e-9)
            by_time = int(state.step * 60 * self.config.max_train_minutes / elapsed_s)
            self.bar.total = max(state.step, min(self.config.max_steps, by_time))
            self.bar.refresh()
        record = {
            "minutes": self.stopwatch.minutes(),
            "train/loss": self.last_loss,
            "train/loss_ema": self.loss_ema,
            "train/lr": lr,
            "train/tokens_per_s": tok_s,
            "train/epoch": state.epoch,
        }
        self.accelerator.log(record, step=state.step)
        append_log(self.accelerator, self.run_dir, {"step": state.step, **record})
        self._new_window()

    def on_train_end(self, model, state: TrainState, reason: str) -> None:
        self.bar.close()


# --------------------------------------------------------------------------------------------------
# Evaluation during training
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def validation_loss(model, loader, accelerator: Accelerator, epsilon: float) -> dict:
    """Label-smoothed loss and NLL per target token over the whole validation split."""
    totals = torch.zeros(3, dtype=torch.float64, device=accelerator.device)
    with eval_mode(model):
        for batch in loader:
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            logits = model(**batch).logits
            loss, nll, count = label_smoothed_loss(logits, batch["labels"], epsilon)
            totals += torch.stack([loss.double(), nll.double(), count.double()])
    totals = accelerator.reduce(totals, "sum")
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
    """BLEU/chrF of `model` on the first `samples` pairs of `split` (all: None)."""
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


def evaluate_during_training(
    model, accelerator, tokenizer, corpus, val_loader, config, step, start: float | None = None
):
    """Validation loss on the whole split (all processes), BLEU/chrF on `eval_bleu_samples`
    pairs (main process); logged, printed above the progress bar and returned."""
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


class Evaluation(TrainingCallback):
    """`evaluate_during_training` every `eval_steps` updates; the result is `state.last_eval`."""

    def __init__(self, config, accelerator, tokenizer, corpus, val_loader, stopwatch: Stopwatch):
        self.config, self.accelerator, self.tokenizer = config, accelerator, tokenizer
        self.corpus, self.val_loader, self.stopwatch = corpus, val_loader, stopwatch

    def on_update(self, model, state: TrainState, update: Update) -> None:
        if not self.config.eval_steps or state.step % self.config.eval_steps:
            return
        with self.stopwatch.paused():
            state.last_eval = evaluate_during_training(
                model, self.accelerator, self.tokenizer, self.corpus, self.val_loader,
                self.config, state.step, self.stopwatch.start,
            )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Stopping: signals and the time budget
# --------------------------------------------------------------------------------------------------


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM stopped training at an update boundary, after saving a checkpoint."""

    def __init__(self, signal_name: str, checkpoint: Path):
        self.signal_name, self.checkpoint = signal_name, checkpoint
        super().__init__(
            f"{signal_name}: stopped at an update boundary; checkpoint saved in {checkpoint}. "
            "Continue with --resume_from_checkpoint latest."
        )


class StopSignals(TrainingCallback):
    """Inside its `with` block, the first SIGINT/SIGTERM becomes a flag that stops the loop at the
    next update boundary (reason: the signal's name, on every process); a second one acts as
    usual (Ctrl-C twice still interrupts at once). Handlers are restored on leaving the block."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    REASONS = ("SIGINT", "SIGTERM", "a stop signal")  # the loop's stop reasons it gives

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.received: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def on_update(self, model, state: TrainState, update: Update) -> str | None:
        if any_process(self.accelerator, self.received is not None):
            return self.received or "a stop signal"  # another process received it
        return None


class TimeBudget(TrainingCallback):
    """Stops the loop ("max_train_minutes") once the run has trained `max_train_minutes`
    (evaluation and checkpoints included), the same update on every process."""

    def __init__(self, config, accelerator, stopwatch: Stopwatch):
        self.minutes, self.accelerator, self.stopwatch = (
            config.max_train_minutes,
            accelerator,
            stopwatch,
        )

    def on_update(self, model, state: TrainState, update: Update) -> str | None:
        out_of_time = self.minutes > 0 and self.stopwatch.minutes() >= self.minutes
        return "max_train_minutes" if any_process(self.accelerator, out_of_time) else None


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


class Checkpointing(TrainingCallback):
    """A checkpoint every `checkpoint_steps` updates and every `checkpoint_minutes`, and one when
    the loop ends (whatever the reason); `last_saved` is the newest one's folder."""

    def __init__(self, config, accelerator, scheduler, stopwatch: Stopwatch):
        self.config, self.accelerator, self.scheduler = config, accelerator, scheduler
        self.stopwatch, self.run_dir = stopwatch, Path(config.output_dir)
        self.last_time, self.last_saved, self.saved_step = time.time(), None, None

    def save(self, state: TrainState) -> Path:
        with self.stopwatch.paused():
            self.last_saved = save_checkpoint(
                self.accelerator,
                self.run_dir,
                snapshot(state, self.stopwatch, self.scheduler),
                self.config.keep_last,
            )
        self.last_time, self.saved_step = time.time(), state.step
        return self.last_saved

    def on_update(self, model, state: TrainState, update: Update) -> None:
        config = self.config
        due = (config.checkpoint_steps and state.step % config.checkpoint_steps == 0) or (
            config.checkpoint_minutes
            and time.time() - self.last_time >= 60 * config.checkpoint_minutes
        )
        if any_process(self.accelerator, bool(due)):
            self.save(state)

    def on_train_end(self, model, state: TrainState, reason: str) -> None:
        if self.saved_step != state.step:
            self.save(state)
