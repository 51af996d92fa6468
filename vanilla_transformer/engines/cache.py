"""The export cache: an engine's export of a model is made on first use and reused while the model's
files are unchanged.

The key is a SHA-256 over the model folder's weight, config and tokenizer files (names and
contents), the engine, the quantization, this package's version, the exporters' revision
(`EXPORT_REVISION`) and the exporting library's version: a changed model (new weights, an edited
config or tokenizer) or an upgrade is exported again, an unchanged one is not. An export is written
into a temporary folder beside its final place and renamed into it (one atomic step), so a reader,
or a second process exporting the same model at the same time, never sees half an export.

The folder is `cache_dir`, else `$VANILLA_TRANSFORMER_CACHE/engines`, else
`$HF_HOME/vanilla_transformer/engines`, else `~/.cache/vanilla_transformer/engines`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

# The files whose content defines a model for an engine: the weights, the configs, the tokenizer.
KEY_SUFFIXES = (".safetensors", ".json", ".txt", ".model")
KEY_EXCLUDED = ("summary.json", "trainer_state.json", "training_args.json", "manifest.json")


def default_cache_dir() -> Path:
    if os.environ.get("VANILLA_TRANSFORMER_CACHE"):
        return Path(os.environ["VANILLA_TRANSFORMER_CACHE"]) / "engines"
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "vanilla_transformer" / "engines"
    return Path.home() / ".cache" / "vanilla_transformer" / "engines"


def model_files(folder: Path) -> list[Path]:
    """The files of a model folder that its export depends on, sorted by name."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix in KEY_SUFFIXES and p.name not in KEY_EXCLUDED
    )


# Raised when an exporter writes something else for the same model and versions (2: ONNX int8 with
# 7-bit weights), so that exports cached by an earlier revision are made again.
EXPORT_REVISION = 2


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def content_key(folder: Path, engine: str, quantization: str, library: str) -> str:
    """SHA-256 (hex, 32 characters) of the folder's model files, the engine, the quantization and
    the versions of this package and of `library` (the exporting runtime)."""
    from .. import __version__

    digest = hashlib.sha256()
    header = (
        f"{engine}\0{quantization}\0{__version__}\0{EXPORT_REVISION}\0"
        f"{library} {_version(library)}\0"
    )
    digest.update(header.encode())
    for path in model_files(folder):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as stream:
            digest.update(hashlib.file_digest(stream, "sha256").digest())
    return digest.hexdigest()[:32]


def cached_export(
    folder: Path,
    engine: str,
    quantization: str,
    library: str,
    export: Callable[[Path], None],
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The export of the model in `folder` for (`engine`, `quantization`): from the cache, else made
    by `export(temporary_folder)` and renamed into place. Returns the export's folder."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = content_key(folder, engine, quantization, library)
    target = root / f"{engine}-{quantization}-{key}"
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    logger.info("exporting %s to %s (%s), once: cached in %s", folder, engine, quantization, target)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        export(temporary)
        try:
            os.rename(temporary, target)
        except OSError:
            if not target.is_dir():  # not another process's finished export: a real failure
                raise
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return target
