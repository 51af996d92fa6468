"""Finding and loading the model a tool or `load_translator` names: a save_pretrained folder, a
training run folder (its final model, else its newest checkpoint) or a Hub id."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..loading import load_model, load_tokenizer
from ..recipe.checkpoints import not_on_the_hub, resolve_model_folder
from ..translation import check_tokenizer_matches


def model_folder(name: str) -> str:
    """The folder (or Hub id) to load for `name`, refusing what is not one of our models."""
    path = Path(name)
    if path.is_dir() and (path / "model.bin").is_file() and not (path / "config.json").is_file():
        raise UserError(
            f"{name} is a CTranslate2 export (model.bin, no config.json): translate with "
            "vanilla_transformer.engines.CTranslate2Translator(folder).translate(lines), or pass "
            "the model folder it was exported from with --engine ctranslate2."
        )
    looks_local = path.is_absolute() or name.startswith(".") or name.count("/") != 1
    if not path.exists() and looks_local:
        raise UserError(f"no model at {name}: pass a model folder, a run folder or a Hub id.")
    try:
        return resolve_model_folder(name)
    except FileNotFoundError as err:
        raise UserError(str(err)) from err


def local_model_folder(name: str) -> Path:
    """`model_folder(name)` as a local folder: a Hub id is downloaded (or read from the Hub
    cache) with `huggingface_hub.snapshot_download`."""
    resolved = model_folder(name)
    if Path(resolved).is_dir():
        return Path(resolved)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(resolved))
    except Exception as err:  # offline, no such repository, no network
        raise not_on_the_hub(resolved, OSError(str(err))) from None


def load_model_and_tokenizer(name: str, device: str = "cpu", fast_cpu: str | None = None):
    """The model and tokenizer of `name` in eval mode on `device` (the fast CPU path with
    `fast_cpu`, `optimize_for_cpu_inference`'s mode), the tokenizer checked against the model."""
    folder = model_folder(name)
    try:
        model = load_model(folder).to(device).eval()  # a local folder loads strictly
    except OSError as err:
        if Path(folder).is_dir():
            raise
        raise not_on_the_hub(folder, err) from None
    tokenizer = load_tokenizer(folder)
    check_tokenizer_matches(model.config, tokenizer)
    if fast_cpu:
        if str(device) != "cpu":
            raise UserError(
                f"--fast_cpu is a CPU path: pass --device cpu (the device is {device})."
            )
        from ..inference import optimize_for_cpu_inference

        model = optimize_for_cpu_inference(model, fast_cpu, inplace=True)
    return model, tokenizer
