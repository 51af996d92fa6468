"""Strict checkpoint loading: a saved model loads completely and exactly, or not at all.

`from_pretrained` in transformers 5 is lenient where a translation model should not be:

- weights the checkpoint lacks (``missing``) are randomly initialised and only a load report is
  logged; weights it holds that the model has no place for (``unexpected``) are dropped the same
  way. A config.json edited to 3 layers over a 2-layer checkpoint, or a BERT folder, "loads" and
  translates garbage;
- a size mismatch raises ``RuntimeError("... look at the above report!")``: the keys are only in
  the log, not in the exception;
- a truncated or corrupted safetensors file raises ``SafetensorError`` without the file's name;
- a folder holding only ``pytorch_model.bin`` is unpickled (``torch.load``), and a config.json
  whose ``model_type`` is not ours is accepted by the model class with a warning.

`load_pretrained_strict` checks the folder first (config.json, ``model_type``, every safetensors
file and shard readable, no pickle-only weights), then loads with ``use_safetensors=True`` and
refuses any missing, unexpected or mismatched key, naming them.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers import AutoModelForSeq2SeqLM
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME as SAFE_INDEX
from transformers.utils import SAFE_WEIGHTS_NAME as SAFE_WEIGHTS

from .modeling_vanilla_transformer import VanillaTransformerForConditionalGeneration

# Files `torch.load` would unpickle: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAX_KEYS_SHOWN = 8


class CheckpointError(ValueError):
    """A saved model folder that cannot be loaded completely; the message names the file or keys."""


def _shown(keys) -> str:
    keys = sorted(str(k) for k in keys)
    more = f" ... and {len(keys) - MAX_KEYS_SHOWN} more" if len(keys) > MAX_KEYS_SHOWN else ""
    return ", ".join(keys[:MAX_KEYS_SHOWN]) + more


def check_config_file(folder: Path, model_type: str) -> dict:
    """config.json exists, is JSON, and names our ``model_type``."""
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {folder} is not a saved model folder.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}).") from None
    if not isinstance(config, dict) or config.get("model_type") != model_type:
        found = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(
            f"{path}: model_type is {found!r}, expected {model_type!r}. This folder holds "
            "another kind of model (or an edited config.json); load it with its own class."
        )
    return config


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files a load will read: the single file, or every shard the index names.
    Refuses pickle-only folders and missing shards."""
    index = folder / SAFE_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{index} is not a valid shard index ({err!r}).") from None
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(
                f"{index} names shard(s) missing from {folder}: {_shown(missing)}. The "
                "checkpoint is incomplete (interrupted copy or save?)."
            )
        return files
    single = folder / SAFE_WEIGHTS
    if single.is_file():
        return [single]
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{folder} holds only pickled weights ({_shown(pickles)}), which can run code when "
            f"loaded; only {SAFE_WEIGHTS} (or a sharded {SAFE_INDEX}) is accepted. Convert them "
            "where you trust the source: load, then save_pretrained."
        )
    raise CheckpointError(f"{folder} has no {SAFE_WEIGHTS} and no {SAFE_INDEX}.")


def check_safetensors_file(path: Path) -> None:
    """The header parses and the tensors it lists cover the file exactly (which catches a
    truncated or extended file; a flipped bit inside tensor data is not detectable here)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({err}); it is truncated or corrupted. "
            "Load an earlier checkpoint or copy this one again."
        ) from None


def load_pretrained_strict(
    folder: str | Path,
    model_class: type = VanillaTransformerForConditionalGeneration,
    **kwargs,
):
    """`model_class.from_pretrained(folder, **kwargs)` that returns a completely loaded model or
    raises `CheckpointError` (a `ValueError`) naming the file, field or keys at fault.

    Refused: no config.json or invalid JSON; a ``model_type`` other than the class's; pickle-only
    weights; a shard the index names but the folder lacks; a truncated or corrupted safetensors
    file; any weight missing from the checkpoint, unexpected by the model, or of another shape
    (e.g. config.json edited after saving); a NaN or inf weight (naming the tensor). Weights are
    read only from safetensors.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a directory (expected a saved model folder).")
    check_config_file(folder, model_class.config_class.model_type)
    for path in safetensors_files(folder):
        check_safetensors_file(path)
    for name in ("output_loading_info", "use_safetensors", "ignore_mismatched_sizes"):
        if name in kwargs:
            raise TypeError(f"load_pretrained_strict sets {name} itself; do not pass it.")
    try:
        model, info = model_class.from_pretrained(
            folder,
            use_safetensors=True,
            output_loading_info=True,
            # Mismatches are collected and refused below with their names and shapes.
            ignore_mismatched_sizes=True,
            **kwargs,
        )
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{folder}: the weights could not be read ({err}).") from err
    problems = []
    if info["missing_keys"]:
        problems.append(f"missing from the checkpoint: {_shown(info['missing_keys'])}")
    if info["unexpected_keys"]:
        problems.append(
            f"in the checkpoint but not in the model: {_shown(info['unexpected_keys'])}"
        )
    if info["mismatched_keys"]:
        shapes = [
            f"{key} (checkpoint {tuple(saved)}, model {tuple(expected)})"
            for key, saved, expected in info["mismatched_keys"]
        ]
        problems.append(f"of another shape: {_shown(shapes)}")
    if info.get("error_msgs"):
        problems.append(f"errors: {'; '.join(info['error_msgs'])}")
    if problems:
        raise CheckpointError(
            f"{folder} does not match its config.json ({model_class.__name__}); weights "
            + "; ".join(problems)
            + ". Was config.json edited, or is this another model's checkpoint?"
        )
    meta = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if meta:
        raise CheckpointError(f"{folder}: parameters left uninitialised: {_shown(meta)}.")
    check_finite_weights(model, folder)
    return model


def check_finite_weights(model, folder: str | Path) -> None:
    """Every floating-point weight is finite: a NaN or inf weight makes `generate` return an
    empty translation with no warning. Raises `CheckpointError` naming the tensors."""
    bad = []
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            nan, inf = int(tensor.isnan().sum()), int(tensor.isinf().sum())
            bad.append(f"{name} ({nan} NaN, {inf} inf of {tensor.numel()})")
    if bad:
        raise CheckpointError(
            f"{folder}: non-finite weights in {_shown(bad)}. The checkpoint was saved from a "
            "diverged run or is corrupted; load an earlier one."
        )


__all__ = [
    "CheckpointError",
    "check_config_file",
    "check_finite_weights",
    "check_safetensors_file",
    "load_model",
    "load_pretrained_strict",
    "load_tokenizer",
    "safetensors_files",
]


# Files a tokenizer folder holds: the fast tokenizer's JSON, or a slow tokenizer's vocabulary.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def load_tokenizer(name_or_folder: str | Path, **kwargs):
    """The tokenizer saved with a model. A local folder without tokenizer files is refused with
    what was looked for (`AutoTokenizer` would talk about converting a slow tokenizer with
    sentencepiece or tiktoken); a Hub id goes to `AutoTokenizer.from_pretrained`."""
    from transformers import AutoTokenizer

    folder = Path(name_or_folder)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(
            f"{folder} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); found "
            f"{sorted(p.name for p in folder.iterdir())}. Save it beside the model with "
            "tokenizer.save_pretrained(folder), or pass the tokenizer's folder separately."
        )
    return AutoTokenizer.from_pretrained(name_or_folder, **kwargs)


def load_model(name_or_folder: str | Path, **kwargs):
    """The model a product tool scores or translates with: a local folder loads strictly
    (`load_pretrained_strict`), a Hub id through `AutoModelForSeq2SeqLM.from_pretrained`."""
    if Path(name_or_folder).is_dir():
        return load_pretrained_strict(name_or_folder, **kwargs)
    return AutoModelForSeq2SeqLM.from_pretrained(name_or_folder, **kwargs)
