"""The one training step and the one loop: the recipe (`training.train`), the attention study and
the benchmark's training measurement all train through `training_step` and `training_loop`.

- `label_smoothed_loss`: cross entropy with label smoothing eps_ls = 0.1 (Section 5.4), SUMMED over
  target tokens; the step divides by the number of target tokens of the whole update (all
  micro-batches of the gradient accumulation, all processes), so the gradient does not depend on
  how an update is split.
- `noam_lambda` / `build_optimizer_and_scheduler`: Adam(0.9, 0.98, 1e-9) and
  lr = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5) (Section 5.3, Equation 3).
- `TrainState`: the loop's counters (what a checkpoint's trainer_state.json holds).
- `TrainingCallback`: what the loop tells after each update; the recipe's progress, evaluation,
  checkpoints, time budget and stop signals are callbacks (`training_callbacks.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger

from .training_config import TrainingConfig

logger = get_logger(__name__)


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
# The state, the callbacks' interface, the step and the loop
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainState:
    """The loop's counters, updated in place: applied updates (`step`), the data position
    (`epoch`, and `batches_done` micro-batches into it), tokens seen (source + target, and target
    alone), and updates dropped as non-finite. The recipe's runs also keep their training time,
    last evaluation, number of processes, tokenizer fingerprint and the options the data order
    depends on; all of it is a checkpoint's trainer_state.json."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0
    tokens: int = 0
    target_tokens: int = 0
    skipped_updates: int = 0
    train_seconds: float = 0.0
    last_eval: dict | None = None
    num_processes: int = 1
    tokenizer_sha256: str | None = None
    resume_options: dict | None = None

    @classmethod
    def from_saved(cls, saved: dict) -> TrainState:
        """The state recorded in a trainer_state.json (keys it does not know, e.g. the
        scheduler's state, are left out; ones it lacks keep their defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})


@dataclasses.dataclass
class Update:
    """What one applied update saw: its label-smoothed loss per target token and its tokens (all
    processes together)."""

    loss: float
    target_tokens: int
    source_tokens: int


class TrainingCallback:
    """Hooks of `training_loop`. Methods left alone do nothing; `on_update` and `on_skipped`
    return a stop reason (a string ends the loop with it) or None. Every callback is told every
    event, in list order, even after an earlier one asked to stop."""

    def on_backward(self, model, state: TrainState) -> None:
        """The update's gradients are in `.grad` (before the finiteness check and clipping);
        `state.step` counts the updates applied so far."""

    def on_update(self, model, state: TrainState, update: Update) -> str | None:
        """After an applied update; `state.step` already counts it."""

    def on_skipped(self, model, state: TrainState) -> str | None:
        """After a non-finite update was dropped (nan_policy='skip')."""

    def on_train_end(self, model, state: TrainState, reason: str) -> None:
        """The loop ends with `reason` ("max_steps" or a callback's)."""


class NonFiniteLossError(RuntimeError):
    """Training stopped on a non-finite loss or gradient (nan_policy='stop')."""


def training_step(
    model,
    optimizer,
    scheduler,
    accelerator: Accelerator,
    batches: list[dict],
    config: TrainingConfig,
    on_backward: Callable[[torch.nn.Module], None] | None = None,
) -> Update | None:
    """One update from `batches` (this process's micro-batches, on the model's device): the
    gradient of the summed label-smoothed token losses divided by the target tokens of the whole
    update (every process, every micro-batch), clipped to `config.max_grad_norm`, then the
    optimizer and `scheduler` (if any) step. A non-finite loss or gradient on any process drops
    the update (gradients zeroed, nothing stepped) and returns None. `on_backward(model)` is
    called once the update's gradients are in `.grad`."""
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


def _tell(callbacks, hook: str, *args) -> str | None:
    """Call `hook` of every callback (in order); the first stop reason returned, if any."""
    reasons = [getattr(callback, hook)(*args) for callback in callbacks]
    return next((reason for reason in reasons if reason), None)


def _next_update_batches(stream, state: TrainState, count: int, device) -> tuple[list, int, int]:
    """`count` micro-batches of `stream`, on `device`, and the data position after them
    (epoch, micro-batches done in it)."""
    batches, epoch_after, consumed = [], state.epoch, state.batches_done
    for _ in range(count):
        epoch_now, batch = next(stream)
        consumed = consumed + 1 if epoch_now == epoch_after else 1
        epoch_after = epoch_now
        batches.append({k: v.to(device) for k, v in batch.items()})
    return batches, epoch_after, consumed


def training_loop(
    model,
    optimizer,
    scheduler,
    accelerator: Accelerator,
    stream: Iterator[tuple[int, dict]],
    config: TrainingConfig,
    state: TrainState,
    callbacks: list[TrainingCallback] = (),
) -> str:
    """`training_step` after `training_step` on `accelerator.gradient_accumulation_steps`
    micro-batches of `stream` (`micro_batches`) each, until `state.step` reaches
    `config.max_steps` or a callback returns a stop reason; returns the reason ("max_steps" or
    the callback's), after telling the callbacks `on_train_end`. A non-finite update is skipped
    (not counted, the schedule not stepped) or, with nan_policy="stop", raises
    `NonFiniteLossError` with `state` as it was before the update."""
    device = next(model.parameters()).device
    reason = None
    while reason is None and state.step < config.max_steps:
        # One update: G micro-batches per process, counted before any backward so that every
        # micro-batch is divided by the token count of the whole update, on every process.
        batches, epoch_after, consumed = _next_update_batches(
            stream, state, accelerator.gradient_accumulation_steps, device
        )
        update = training_step(
            model, optimizer, scheduler, accelerator, batches, config,
            on_backward=lambda model: _tell(callbacks, "on_backward", model, state),
        )  # fmt: skip
        if update is None:
            state.skipped_updates += 1
            logger.warning(
                f"non-finite loss or gradient at update {state.step + 1}: "
                f"{'skipped' if config.nan_policy == 'skip' else 'stopping'} "
                f"({state.skipped_updates} so far)"
            )
            accelerator.log({"train/skipped_updates": state.skipped_updates}, step=state.step)
            if config.nan_policy == "stop":
                raise NonFiniteLossError(f"non-finite loss at update {state.step + 1}")
            state.epoch, state.batches_done = epoch_after, consumed
            reason = _tell(callbacks, "on_skipped", model, state)
        else:
            state.step += 1
            state.epoch, state.batches_done = epoch_after, consumed
            state.target_tokens += update.target_tokens
            state.tokens += update.target_tokens + update.source_tokens
            reason = _tell(callbacks, "on_update", model, state, update)
    reason = reason or "max_steps"
    _tell(callbacks, "on_train_end", model, state, reason)
    return reason
