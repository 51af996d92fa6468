"""Checkpoint averaging (Section 6.1): "For the base models, we used a single model obtained by
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

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

__all__ = [
    "average_state_dicts",
    "average_checkpoints",
    "load_checkpoint_state_dict",
    "find_weights_file",
    "list_checkpoints",
    "load_averaged_weights",
    "DEFAULT_TIED_WEIGHTS",
]

SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# alias -> source, as declared by VanillaTransformerForConditionalGeneration / Model in
# `_tied_weights_keys` (Section 3.4: one matrix for both embeddings and the pre-softmax projection).
DEFAULT_TIED_WEIGHTS = {
    "lm_head.weight": "model.shared.weight",
    "model.encoder.embed_tokens.weight": "model.shared.weight",
    "model.decoder.embed_tokens.weight": "model.shared.weight",
}
_STEP_RE = re.compile(r"(\d+)$")  # the name must END in the step: not "checkpoint-3.tmp"


def find_weights_file(folder: str | Path) -> Path:
    """The weights file of a checkpoint folder (see the module docstring for the layouts)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} does not exist.")
    for name in (SAFE_WEIGHTS, SAFE_WEIGHTS_INDEX, TORCH_WEIGHTS):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"{folder}: no {SAFE_WEIGHTS}, {SAFE_WEIGHTS_INDEX} or {TORCH_WEIGHTS} (expected a "
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
    if path.name == SAFE_WEIGHTS:
        raw = load_file(str(path), device="cpu")
    elif path.name == SAFE_WEIGHTS_INDEX:
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
    folders: Iterable[str | Path], tied_weights: Mapping[str, str] | None = None
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
    for folder in folders:
        averager.add(
            load_checkpoint_state_dict(folder, tied_weights), str(find_weights_file(folder))
        )
    return averager.result()


def _step_of(folder: Path) -> int | None:
    match = _STEP_RE.search(folder.name)
    return int(match.group(1)) if match else None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a training run, oldest first.

    A checkpoint is a sub-folder of `run_dir` (or of `run_dir/checkpoints`, accelerate's
    `automatic_checkpoint_naming` layout) whose name ends in a number (`checkpoint_3`,
    `checkpoint-1200`, `step_500`) and that holds a weights file; they are ordered by that number.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist.")
    found = []
    for parent in (run_dir, run_dir / "checkpoints"):
        if not parent.is_dir():
            continue
        for child in parent.iterdir():
            step = _step_of(child)
            weights = (SAFE_WEIGHTS, SAFE_WEIGHTS_INDEX, TORCH_WEIGHTS)
            if (
                child.is_dir()
                and step is not None
                and any((child / name).is_file() for name in weights)
            ):
                found.append((step, str(child), child))
    return [path for _, _, path in sorted(found)]


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
