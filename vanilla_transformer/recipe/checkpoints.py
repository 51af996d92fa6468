"""Checkpoints: what one is, where they live, how they are written, found, read and averaged.

A checkpoint is a folder whose name ends in its step (`checkpoint_3`, `checkpoint-1200`,
`step_500`; `checkpoint_3.tmp` is not one) directly under a run folder or under its
`checkpoints/`, holding a weights file. The training loop writes `checkpoints/checkpoint_<step>`
with `save_checkpoint`: `accelerator.save_state` into a `.tmp` folder, `trainer_state.json`, then
`manifest.json` (size and sha256 of every other file) last, fsynced, then renamed; such a
checkpoint can be resumed from (`complete_checkpoints`), once it verifies against its manifest
(`verify_checkpoint`; `resolve_checkpoint("latest")` falls back to the newest that does).

Checkpoint averaging (Section 6.1): "For the base models, we used a single model obtained by
averaging the last 5 checkpoints, which were written at 10-minute intervals. For the big models,
we averaged the last 20 checkpoints."

Accepted checkpoint folders (both hold the weights under the same keys):

- a `save_pretrained` folder: `model.safetensors` (or a sharded `model.safetensors.index.json`);
- an `accelerator.save_state` folder: `model.safetensors` beside `optimizer.bin`,
  `random_states_0.pkl`, ... (with `safe_serialization=False`: `pytorch_model.bin`).

Keys written by a wrapper (`module.` from DDP, `_orig_mod.` from `torch.compile`) are stripped.
Tied weights are stored once: both layouts keep `model.shared.weight` and drop its aliases
(`lm_head.weight`, `model.{encoder,decoder}.embed_tokens.weight`); a checkpoint that stores an
alias too (e.g. `torch.save(model.state_dict())`) is normalised to the same keys when the alias
equals its source.

The sum is taken in float64 and divided once, then cast back to each tensor's dtype, so the result
does not depend on the order of the checkpoints beyond float64 rounding. Integer tensors (buffers
such as step counters) are not averaged: the last checkpoint's value is kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from ..errors import UserError
from ..modeling_vanilla_transformer import (
    VanillaTransformerForConditionalGeneration,
    VanillaTransformerModel,
)
from .run_folder import (
    HUB_SUBFOLDER,
    RUN_CONFIG_FILE,
    WEIGHT_FILES,
    disk_full_error,
    find_run_dir,
    folder_size,
    recorded_hub_folder,
    run_training_values,
    sha256_file,
)

__all__ = [
    "average_state_dicts",
    "average_checkpoints",
    "load_checkpoint_state_dict",
    "find_weights_file",
    "list_checkpoints",
    "complete_checkpoints",
    "resolve_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "read_trainer_state",
    "write_manifest",
    "verify_checkpoint",
    "newest_verified",
    "CheckpointVerificationError",
    "load_averaged_weights",
    "checkpoints_to_average",
    "average_unless_worse",
    "resolve_model_folder",
    "find_run_dir",
    "run_training_values",
    "DEFAULT_TIED_WEIGHTS",
    "tied_weights",
    "drop_tied_aliases",
]

logger = get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint_"
TMP_SUFFIX = ".tmp"
STATE_FILE = "trainer_state.json"  # a checkpoint without it is incomplete
MANIFEST_FILE = "manifest.json"  # written last: size and sha256 of every other file
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def tied_weights(
    model: torch.nn.Module | type = VanillaTransformerForConditionalGeneration,
) -> dict[str, str]:
    """alias -> source state-dict key of each tied weight (Section 3.4), read from the model's
    `_tied_weights_keys`: for a model object, as transformers expanded them for it
    (`all_tied_weights_keys`, the base model's under its prefix, empty when its config does not tie
    them); for a model class, as the class and its base model declare them. The one place that
    says which weights are stored once (checkpoints, averaging, the fine-tune Trainer's saves)."""
    if isinstance(model, torch.nn.Module):
        return dict(getattr(model, "all_tied_weights_keys", None) or {})
    base, prefix = VanillaTransformerModel, model.base_model_prefix
    nested = {f"{prefix}.{k}": f"{prefix}.{v}" for k, v in base._tied_weights_keys.items()}
    return {**model._tied_weights_keys, **nested}


def drop_tied_aliases(state_dict: dict, aliases: Mapping[str, str]) -> None:
    """Remove (in place) the keys of `state_dict` that are tied aliases (`tied_weights`), wrapper
    prefixes (`module.`, `_orig_mod.`) ignored: they are stored once, under their source."""
    for name in list(state_dict):
        if _strip_wrapper_prefix(name) in aliases:
            del state_dict[name]


DEFAULT_TIED_WEIGHTS = tied_weights()
_STEP_RE = re.compile(r"(\d+)$")  # the name must END in the step: not "checkpoint-3.tmp"


def find_weights_file(folder: str | Path) -> Path:
    """The weights file of a checkpoint folder (see the module docstring for the layouts)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} does not exist.")
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"{folder}: no {', '.join(WEIGHT_FILES[:-1])} or {WEIGHT_FILES[-1]} (expected a "
        "save_pretrained or accelerator.save_state folder); found "
        f"{sorted(p.name for p in folder.iterdir())}."
    )


def _strip_wrapper_prefix(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _untie(state_dict: dict[str, torch.Tensor], tied_weights: Mapping[str, str]):
    """Drop tied aliases (stored once under their source), renaming a lone alias to its source."""
    for alias, source in tied_weights.items():
        if alias not in state_dict:
            continue
        if source not in state_dict:
            state_dict[source] = state_dict.pop(alias)
        elif state_dict[alias] is state_dict[source] or (
            state_dict[alias].shape == state_dict[source].shape
            and torch.equal(state_dict[alias], state_dict[source])
        ):
            del state_dict[alias]
        # An alias that differs from its source is an untied weight: keep both.
    return state_dict


def load_checkpoint_state_dict(
    folder: str | Path, tied_weights: Mapping[str, str] | None = None
) -> dict[str, torch.Tensor]:
    """Read a checkpoint folder's weights on CPU: wrapper prefixes stripped, tied weights once.

    `tied_weights` maps alias -> source key (default `DEFAULT_TIED_WEIGHTS`).
    """
    path = find_weights_file(folder)
    if path.name == SAFE_WEIGHTS_NAME:
        raw = load_file(str(path), device="cpu")
    elif path.name == SAFE_WEIGHTS_INDEX_NAME:
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        raw = {}
        for shard in shards:
            raw.update(load_file(str(path.parent / shard), device="cpu"))
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = {}
    for key, value in raw.items():
        name = _strip_wrapper_prefix(key)
        if name in state_dict:
            raise ValueError(f"{path}: key {name!r} appears twice without wrapper prefixes.")
        state_dict[name] = value
    tied = DEFAULT_TIED_WEIGHTS if tied_weights is None else tied_weights
    return _untie(state_dict, tied)


class _Averager:
    """Running float64 sum of state dicts that all have the first one's keys, shapes and dtypes."""

    def __init__(self):
        self.count = 0
        self.first_name = None
        self.sums: dict[str, torch.Tensor] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self.shapes: dict[str, torch.Size] = {}
        self.aliases: dict[str, str] = {}  # alias -> source, for tensors shared within the dict

    def add(self, state_dict: Mapping[str, torch.Tensor], name: str) -> None:
        if self.count == 0:
            self._start(state_dict, name)
        else:
            self._check(state_dict, name)
        for key, value in state_dict.items():
            if key in self.aliases:
                continue
            value = value.detach()
            if value.is_floating_point():
                self.sums[key] += value.to(device="cpu", dtype=torch.float64)
            else:
                self.sums[key] = value.to("cpu").clone()  # not averaged: the last one is kept
        self.count += 1

    def _start(self, state_dict: Mapping[str, torch.Tensor], name: str) -> None:
        self.first_name = name
        storage_owner: dict[tuple, str] = {}
        for key, value in state_dict.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name}: {key!r} is a {type(value).__name__}, not a tensor.")
            self.dtypes[key], self.shapes[key] = value.dtype, value.shape
            # Tensors sharing memory in the first dict (tied weights) are averaged once.
            ident = (
                value.device,
                value.untyped_storage().data_ptr(),
                value.storage_offset(),
                tuple(value.shape),
                tuple(value.stride()),
            )
            if value.numel() > 0 and ident in storage_owner:
                self.aliases[key] = storage_owner[ident]
                continue
            storage_owner[ident] = key
            if value.is_floating_point():
                self.sums[key] = torch.zeros(value.shape, dtype=torch.float64)

    def _check(self, state_dict: Mapping[str, torch.Tensor], name: str) -> None:
        missing = sorted(set(self.shapes) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(self.shapes))
        if missing or unexpected:
            raise ValueError(
                f"{name}: keys differ from {self.first_name}: missing {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}"
                f"{' ...' if len(unexpected) > 10 else ''}."
            )
        for key, value in state_dict.items():
            if value.shape != self.shapes[key]:
                raise ValueError(
                    f"{name}: key {key!r} has shape {tuple(value.shape)}, but "
                    f"{tuple(self.shapes[key])} in {self.first_name}."
                )
            if value.dtype != self.dtypes[key]:
                raise ValueError(
                    f"{name}: key {key!r} has dtype {value.dtype}, but {self.dtypes[key]} in "
                    f"{self.first_name}."
                )
            if key in self.aliases and not torch.equal(value, state_dict[self.aliases[key]]):
                raise ValueError(
                    f"{name}: key {key!r} is tied to {self.aliases[key]!r} in {self.first_name} "
                    "but differs from it here."
                )

    def result(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            raise ValueError("nothing to average: no state dicts / checkpoints were given.")
        out: dict[str, torch.Tensor] = {}
        for key in self.shapes:
            if key in self.aliases:
                continue
            value = self.sums[key]
            if self.dtypes[key].is_floating_point:
                value = (value / self.count).to(self.dtypes[key])
            out[key] = value
        for alias, source in self.aliases.items():
            out[alias] = out[source]  # the same tensor object: still tied
        return {key: out[key] for key in self.shapes}  # the first dict's key order


def average_state_dicts(
    state_dicts: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with identical keys, shapes and dtypes.

    Floating tensors are summed in float64, divided by their number, and cast back to their dtype;
    integer tensors keep the last dict's value. Keys that share memory in the first dict (tied
    weights, e.g. `model.state_dict()` of a tied model) are averaged once and share one tensor in
    the result. `names` (e.g. file names) label the dicts in error messages.

    Raises:
        ValueError: no dicts, or a dict whose keys, shapes or dtypes differ from the first's (the
            message names the dict and the key).
    """
    state_dicts = list(state_dicts)
    if names is None:
        names = [f"state_dicts[{i}]" for i in range(len(state_dicts))]
    names = list(names)
    if len(names) != len(state_dicts):
        raise ValueError(f"got {len(names)} names for {len(state_dicts)} state dicts.")
    averager = _Averager()
    for state_dict, name in zip(state_dicts, names, strict=True):
        averager.add(state_dict, name)
    return averager.result()


def average_checkpoints(
    folders: Iterable[str | Path],
    tied_weights: Mapping[str, str] | None = None,
    show_progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Average the weights of checkpoint folders (see the module docstring for the layouts).

    The checkpoints are read one at a time (memory: one checkpoint plus a float64 sum). Returns
    the averaged state dict with tied weights stored once under their source key, ready for
    `model.load_state_dict(..., strict=False)` followed by a check that only tied keys are missing
    (`scripts/average_checkpoints.py` does this).

    Raises:
        FileNotFoundError: a folder or its weights file is missing.
        ValueError: no folders, or checkpoints whose keys, shapes or dtypes differ (the message
            names the weights file and the key).
    """
    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("average_checkpoints needs at least one checkpoint folder, got none.")
    averager = _Averager()
    for folder in tqdm(folders, desc="averaging", unit="checkpoint", disable=not show_progress):
        averager.add(
            load_checkpoint_state_dict(folder, tied_weights), str(find_weights_file(folder))
        )
    return averager.result()


def _step_of(folder: Path) -> int | None:
    match = _STEP_RE.search(folder.name)
    return int(match.group(1)) if match else None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoints of a training run (see the module docstring), oldest first: ordered by
    the step their name ends in."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist.")
    found = []
    for parent in (run_dir, run_dir / "checkpoints"):
        if not parent.is_dir():
            continue
        for child in parent.iterdir():
            step = _step_of(child)
            if (
                step is not None
                and child.is_dir()
                and any((child / name).is_file() for name in WEIGHT_FILES)
            ):
                found.append((step, str(child), child))
    return [path for _, _, path in sorted(found)]


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoints the training loop can resume from, oldest first: those of
    `list_checkpoints` that it wrote (`checkpoints/checkpoint_<step>`) with their trainer state."""
    if not Path(run_dir).is_dir():
        return []
    return [
        path
        for path in list_checkpoints(run_dir)
        if path.parent.name == "checkpoints"
        and path.name.startswith(CHECKPOINT_PREFIX)
        and (path / STATE_FILE).is_file()
    ]


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointVerificationError(ValueError):
    """A checkpoint whose files do not match its manifest; the message names the file."""


def write_manifest(folder: str | Path) -> Path:
    """Write `manifest.json`: size and sha256 of every other file of the checkpoint folder.
    Written last, so a checkpoint with a manifest was complete when the manifest was written."""
    folder = Path(folder)
    files = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST_FILE
    }
    path = folder / MANIFEST_FILE
    path.write_text(json.dumps({"files": files}, indent=1, sort_keys=True) + "\n")
    return path


def verify_checkpoint(folder: str | Path) -> None:
    """Check every file of a checkpoint against its manifest (presence, size, sha256).

    Catches truncation, a garbage or missing file, and any changed byte, including a flipped bit
    inside tensor data that no format check would notice (`random_states_0.pkl`,
    `optimizer.bin` and `trainer_state.json` included, which accelerate would otherwise load
    with a warning or a bare error).

    Raises:
        CheckpointVerificationError: naming the file and what differs, or the missing manifest.
    """
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointVerificationError(
            f"{path} is missing: the checkpoint cannot be verified (saved before manifests "
            "existed?)."
        )
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise CheckpointVerificationError(f"{path} is not a valid manifest ({err}).") from None
    for name, expected in sorted(files.items()):
        file = folder / name
        if not file.is_file():
            raise CheckpointVerificationError(f"{file} is listed in {MANIFEST_FILE} but missing.")
        size = file.stat().st_size
        if size != expected.get("size"):
            raise CheckpointVerificationError(
                f"{file} has {size} bytes, {expected.get('size')} when saved (truncated or "
                "overwritten)."
            )
        if sha256_file(file) != expected.get("sha256"):
            raise CheckpointVerificationError(
                f"{file} differs from the file saved (sha256 mismatch): corrupted on disk."
            )


def newest_verified(checkpoints: Iterable[Path]) -> tuple[Path, list[tuple[Path, str]]]:
    """The newest of `checkpoints` (given oldest first) that verifies, and the newer ones skipped
    with the reason.

    Raises:
        CheckpointVerificationError: none verifies (every reason listed).
    """
    skipped: list[tuple[Path, str]] = []
    for folder in reversed(list(checkpoints)):
        try:
            verify_checkpoint(folder)
        except CheckpointVerificationError as err:
            skipped.append((folder, str(err)))
            continue
        return folder, skipped
    reasons = "; ".join(f"{folder.name}: {reason}" for folder, reason in skipped) or "none found"
    raise CheckpointVerificationError(f"no checkpoint verifies against its manifest ({reasons}).")


def resolve_checkpoint(run_dir: str | Path, which: str) -> Path:
    """'latest' -> the newest finished checkpoint of `run_dir` that verifies against its manifest
    (each newer one that does not is skipped with a warning naming the file at fault); else the
    folder given, which must verify (one without a manifest, saved by an older version, is
    accepted with a warning, as it was asked for by name)."""
    if which == "latest":
        found = complete_checkpoints(run_dir)
        if not found:
            raise FileNotFoundError(f"no finished checkpoint under {Path(run_dir) / 'checkpoints'}")
        chosen, skipped = newest_verified(found)
        for folder, reason in skipped:
            logger.warning(f"skipping checkpoint {folder.name}: {reason}")
        if skipped:
            logger.warning(f"resuming from {chosen.name}, the newest checkpoint that verifies")
        return chosen
    path = Path(which)
    if path.name.endswith(TMP_SUFFIX) or not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a finished checkpoint (no {STATE_FILE}).")
    try:
        verify_checkpoint(path)
    except CheckpointVerificationError as err:
        if (path / MANIFEST_FILE).is_file():
            raise
        logger.warning(f"{err} Resuming from it unverified, as it was asked for by name.")
    return path


def read_trainer_state(path: Path) -> dict:
    """A checkpoint's trainer state (counters, sampler position, scheduler); errors name it."""
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("not a trainer state (no 'step')")
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise ValueError(f"{path / STATE_FILE} cannot be read ({err}).") from None
    return state


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict:
    """`accelerator.load_state` of a checkpoint, and its trainer state; errors name the file."""
    state = read_trainer_state(path)
    try:
        accelerator.load_state(str(path))
    except Exception as err:
        raise ValueError(
            f"{path}: the checkpoint could not be loaded ({type(err).__name__}: {err})."
        ) from err
    return state


@contextlib.contextmanager
def _accelerate_checkpoint_logs_quiet():
    """accelerate logs an INFO line per file it saves, naming the `.tmp` folder that is renamed a
    moment later; the one line `save_checkpoint` logs names the checkpoint. Warnings still show."""
    checkpoint_logger = logging.getLogger("accelerate.checkpointing")
    level = checkpoint_logger.level
    checkpoint_logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        checkpoint_logger.setLevel(level)


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: dict, keep_last: int) -> Path:
    """`accelerator.save_state` (model, optimizer, RNG states) plus the trainer state (counters,
    sampler position, scheduler) and, last, the manifest (sha256 of every file) into
    `checkpoint_<step>.tmp`, fsynced, then renamed to `checkpoint_<step>`: a crash leaves either
    the previous checkpoints or the new one, never a half-written one. A full disk raises
    `OSError(ENOSPC)` naming the folder, with the failed save's files removed and the previous
    checkpoint intact."""
    folder = run_dir / "checkpoints"
    final = folder / f"{CHECKPOINT_PREFIX}{state['step']}"
    tmp = folder / f"{final.name}{TMP_SUFFIX}"
    previous = complete_checkpoints(run_dir)
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        with _accelerate_checkpoint_logs_quiet():
            accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
            write_manifest(tmp)
            _fsync_tree(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_tree(folder)
    except Exception as err:
        needed = folder_size(previous[-1]) if previous else 0
        full = disk_full_error(err, folder, needed)
        if full is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # give back the space the failed save took
        kept = f"{previous[-1]} is intact" if previous else "there is no earlier checkpoint"
        raise OSError(full.errno, f"{full.strerror}, while saving {final.name}; {kept}.") from err
    if accelerator.is_main_process:
        for old in complete_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        logger.info(f"checkpoint saved: {final}")
    accelerator.wait_for_everyone()
    return final


def load_averaged_weights(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load an averaged state dict into `model` (in place). Keys absent from `state_dict` are
    accepted only where the model ties them to a loaded tensor (e.g. `lm_head.weight` to
    `model.shared.weight`), so an untied weight can never be left at its initial value.

    Raises:
        ValueError: unexpected keys, or missing keys that are not tied to a loaded tensor.
    """
    missing, unexpected = model.load_state_dict(dict(state_dict), strict=False)
    if unexpected:
        raise ValueError(f"averaged weights have keys the model does not: {sorted(unexpected)}.")
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(dict(model.named_buffers(remove_duplicate=False)))
    loaded = {tensors[k].data_ptr() for k in state_dict if k in tensors}
    untied = [k for k in missing if k not in tensors or tensors[k].data_ptr() not in loaded]
    if untied:
        raise ValueError(
            f"averaged weights lack {sorted(untied)}, which the model does not tie to a loaded "
            "tensor: the checkpoints do not match this model."
        )


def _is_repo_id(name: str) -> bool:
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not name.startswith((".", "/", "~"))


def _no_model_message(path: Path) -> str:
    """A local path that is no model folder, with the models or checkpoints that do exist."""
    if path.exists():
        return f"{path} is a file, not a model or run folder; pass a folder."
    run = find_run_dir(path.parent) or path.parent
    found = [str(p) for p in list_checkpoints(run)] if run.is_dir() else []
    for folder in dict.fromkeys((path.parent, run)):
        found += [str(p) for p in sorted(folder.iterdir()) if (p / "config.json").is_file()]
    found = list(dict.fromkeys(found))
    names = f"those that exist: {', '.join(found[-6:])}" if found else f"nothing loadable in {run}"
    return f"{path} does not exist; {names}."


# --------------------------------------------------------------------------------------------------
# The averaging decision (issue 19.2): only checkpoints past warm-up are averaged, and the average
# replaces the newest checkpoint only when it does not score below it on validation.
# --------------------------------------------------------------------------------------------------


def checkpoints_to_average(
    checkpoints: Sequence[Path], average_last: int, warmup_steps: int
) -> tuple[list[Path], list[Path]]:
    """(the last `average_last` of `checkpoints` (oldest first) written at or after update
    `warmup_steps`, those of the last `average_last` left out for being inside the warm-up).
    A warm-up checkpoint is far from the trained model; averaging it in lowers quality."""
    last = list(checkpoints)[-average_last:] if average_last > 0 else []
    past = [p for p in last if (_step_of(p) or 0) >= warmup_steps]
    return past, [p for p in last if p not in past]


def _rank(scores: Mapping[str, float]) -> tuple[float, ...]:
    """Higher is better: BLEU first, chrF for ties (a short run's BLEU is often 0 for both);
    a loss only where no BLEU was computed."""
    if "bleu" in scores:
        return (scores["bleu"], scores.get("chrf", 0.0))
    return (-scores["loss"],)


def average_unless_worse(
    model: torch.nn.Module,
    checkpoints: Sequence[Path],
    score: Callable[[torch.nn.Module], dict] | None,
    show_progress: bool = False,
) -> dict:
    """Load the mean of `checkpoints` into `model`, which holds the newest checkpoint's weights,
    unless it scores below them on `score(model)` (a dict with "bleu"/"chrf", or "loss"): then the
    newest weights are put back. Without `score` the average is kept unchecked.

    Returns the record of the decision: {"averaged": [names], "kept": "average" | "newest",
    "newest_scores": {...} | None, "average_scores": {...} | None}."""
    newest = {k: v.detach().clone() for k, v in model.state_dict().items()}
    newest_scores = score(model) if score is not None else None
    load_averaged_weights(model, average_checkpoints(checkpoints, show_progress=show_progress))
    average_scores = score(model) if score is not None else None
    kept = "average"
    if score is not None and _rank(average_scores) < _rank(newest_scores):
        model.load_state_dict(newest)
        kept = "newest"
    return {
        "averaged": [p.name for p in checkpoints],
        "kept": kept,
        "newest_scores": newest_scores,
        "average_scores": average_scores,
    }


def resolve_model_folder(name_or_path: str | Path) -> str:
    """What `from_pretrained` should load for `name_or_path`:

    - a folder with a `config.json` (a Hub folder, a checkpoint, a save_pretrained folder): itself;
    - a training run folder (`summary.json`, `training_config.json` or `checkpoints/`): its final
      model (the `hub_folder` named in `summary.json`, resolved against the run folder, never the
      working directory; else `<run>/hub`), else its newest
      checkpoint that holds a `config.json`;
    - anything else (e.g. a Hub id) unchanged.

    Raises:
        FileNotFoundError: a run folder with no loadable model, naming what was looked for.
        UserError: a local path (its parent folder exists) that is not a folder, naming the
            checkpoints and models that do exist there.
    """
    path = Path(name_or_path)
    if not path.is_dir():
        if path.exists() or path.parent.is_dir() and str(path.parent) not in ("", "."):
            raise UserError(_no_model_message(path))
        if not _is_repo_id(str(name_or_path)):
            raise UserError(f"{name_or_path} does not exist (and is not a Hub id); pass a folder.")
        return str(name_or_path)
    if (path / "config.json").is_file():
        return str(path)
    candidates = [recorded_hub_folder(path), path / HUB_SUBFOLDER]
    if any((path / n).exists() for n in ("checkpoints", RUN_CONFIG_FILE)):
        candidates += reversed(list_checkpoints(path))
    for candidate in filter(None, candidates):
        if (candidate / "config.json").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"{path} holds no model to load: no config.json in it, and as a run folder no final model "
        f"(summary.json's hub_folder or {path / 'hub'}) and no checkpoint with a config.json. "
        "Pass a model folder, or a run whose checkpoints were saved by this version."
    )


def not_on_the_hub(name: str, err: OSError) -> UserError:
    """The error for a name that is no local folder and could not be loaded from the Hub (no
    network, offline mode, no such repository)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return UserError(f"{name}: no such local folder, and not loadable from the Hub ({first})")
