"""Engines: one model folder translated by PyTorch, CTranslate2 or ONNX Runtime behind one interface.

    from vanilla_transformer.engines import load_translator
    from vanilla_transformer.translation import DecodingOptions

    translator = load_translator("runs/cpu-small/hub", engine="ctranslate2", quantization="int8")
    translator.translate(["In the beginning God created the heaven and the earth."])
    translator.translate_hypotheses(lines, DecodingOptions(num_beams=4, num_return_sequences=2))

`model` is resolved as the translate tool does (a save_pretrained folder, a training run folder,
a Hub id). The CTranslate2 and ONNX exports are made on first use into a cache keyed by the
model's content (`engines.cache`): a changed model is exported again, an unchanged one is not.

Quantizations: torch: None (plain `generate()`), or a fast CPU mode of
`optimize_for_cpu_inference` ("int8" only on CPUs with VNNI/AMX, "bf16" only with native bf16,
"fp32"); ctranslate2: "float32" (default), "int8", "int8_float32", "int8_float16", "float16",
"bfloat16" (the weights' type and CTranslate2's compute type); onnxruntime: "float32" (default) or
"int8" (ONNX Runtime's dynamic quantization of the matrix products).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import UserError
from ..inference import MODES
from .base import ENGINES, Translator, UnsupportedOption

__all__ = [
    "ENGINES",
    "QUANTIZATIONS",
    "CTranslate2Translator",
    "OnnxTranslator",
    "TorchTranslator",
    "Translator",
    "UnsupportedOption",
    "load_translator",
    "tool_quantization",
]

QUANTIZATIONS = {
    "torch": MODES,
    "ctranslate2": ("float32", "int8", "int8_float32", "int8_float16", "float16", "bfloat16"),
    "onnxruntime": ("float32", "int8"),
}
ALL_QUANTIZATIONS = tuple(dict.fromkeys(q for qs in QUANTIZATIONS.values() for q in qs))
# The --engine and --quantization help of every tool that has them (translate, evaluate, serve).
ENGINE_HELP = (
    "What runs the model: torch (its own generate()), ctranslate2 or onnxruntime (exported on "
    "first use into a cache keyed by the model's content; docs/deployment.md)."
)
QUANTIZATION_HELP = (
    "The engine's weight type: ctranslate2 float32 (default), int8, int8_float32, ...; "
    "onnxruntime float32 (default) or int8; torch: a --fast_cpu mode."
)
# The Python packages each engine needs (pip extra `export`): to run, and to export.
RUNTIMES = {"ctranslate2": ("ctranslate2",), "onnxruntime": ("onnxruntime", "onnx", "onnxscript")}


def __getattr__(name: str):
    # The engine classes import their runtimes: loaded on first use only.
    if name == "TorchTranslator":
        from .torch_engine import TorchTranslator

        return TorchTranslator
    if name == "CTranslate2Translator":
        from .ctranslate2_engine import CTranslate2Translator

        return CTranslate2Translator
    if name == "OnnxTranslator":
        from .onnx_engine import OnnxTranslator

        return OnnxTranslator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_engine_choice(engine: str, quantization: str | None) -> None:
    """A UserError naming the choices for an unknown engine or a quantization the engine lacks."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}.")
    if quantization is not None and quantization not in QUANTIZATIONS[engine]:
        having = [e for e in ENGINES if quantization in QUANTIZATIONS[e]]
        where = f"; {quantization} is on: {', '.join(having)}" if having else ""
        raise UnsupportedOption(
            f"the {engine} engine has no quantization {quantization!r} (it has: "
            f"{', '.join(QUANTIZATIONS[engine])}){where}."
        )
    missing = [p for p in RUNTIMES.get(engine, ()) if importlib.util.find_spec(p) is None]
    if missing:
        raise UserError(
            f"the {engine} engine needs {', '.join(missing)}: pip install 'vanilla-transformer[export]'."
        )


def load_translator(
    model: str | os.PathLike,
    engine: str = "torch",
    quantization: str | None = None,
    device: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    threads: int | None = None,
) -> Translator:
    """`model` (a model folder, a training run folder or a Hub id) on `engine` ("torch",
    "ctranslate2", "onnxruntime") with `quantization` (see the module's docstring), as a
    `Translator`. `device`: torch's ("cuda" if available, else "cpu"), CTranslate2's ("cpu" or
    "cuda"); ONNX Runtime runs on the CPU. `threads`: CTranslate2's / ONNX Runtime's threads
    (default: torch's, `torch.get_num_threads()`). Exports go to `cache_dir` (default:
    `engines.cache.default_cache_dir()`)."""
    import torch

    check_engine_choice(engine, quantization)
    name = os.fspath(model)
    if engine == "torch":
        from .loading import load_model_and_tokenizer
        from .torch_engine import TorchTranslator

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        loaded, tokenizer = load_model_and_tokenizer(name, device, fast_cpu=quantization)
        return TorchTranslator(loaded, tokenizer, device)
    threads = threads or torch.get_num_threads()
    if engine == "ctranslate2":
        return _ctranslate2(name, quantization or "float32", device or "cpu", cache_dir, threads)
    if device not in (None, "cpu"):
        raise UserError(f"the onnxruntime engine runs on the CPU here; got --device {device}.")
    return _onnxruntime(name, quantization or "float32", cache_dir, threads)


def _loaded(folder: Path):
    from .loading import load_model_and_tokenizer

    return load_model_and_tokenizer(str(folder), "cpu")


def _ctranslate2(name: str, quantization: str, device: str, cache_dir, threads: int):
    from ..export.ctranslate2 import export_ctranslate2
    from .cache import cached_export
    from .ctranslate2_engine import CONFIG_FILE, CTranslate2Translator
    from .loading import local_model_folder

    folder = local_model_folder(name)

    def export(target: Path) -> None:
        model, tokenizer = _loaded(folder)
        try:
            export_ctranslate2(model, tokenizer, target, quantization)
        except ValueError as err:  # a config CTranslate2 cannot express: the reason, one line
            raise UserError(f"{name} cannot run on ctranslate2: {err}") from None
        model.config.to_json_file(str(target / CONFIG_FILE))

    exported = cached_export(folder, "ctranslate2", quantization, "ctranslate2", export, cache_dir)
    return CTranslate2Translator(
        exported, compute_type=quantization, device=device, intra_threads=threads
    )


def _onnxruntime(name: str, quantization: str, cache_dir, threads: int):
    from ..export.onnx import export_onnx, quantize_onnx_int8
    from .cache import cached_export
    from .loading import local_model_folder
    from .onnx_engine import OnnxTranslator

    folder = local_model_folder(name)

    def export(target: Path) -> None:
        model, tokenizer = _loaded(folder)
        export_onnx(model, tokenizer, target)
        if quantization == "int8":
            quantize_onnx_int8(target)

    exported = cached_export(folder, "onnxruntime", quantization, "onnxruntime", export, cache_dir)
    return OnnxTranslator(exported, intra_op_num_threads=threads)


def tool_quantization(engine: str, quantization: str | None, fast_cpu: str | None) -> str | None:
    """The tools' quantization: `--quantization`, or `--fast_cpu MODE` (the torch engine's
    quantization under its older name); a UserError where the two disagree."""
    if fast_cpu is None:
        return quantization
    if engine != "torch":
        raise UserError(
            f"--fast_cpu is the torch engine's fast path; with --engine {engine} choose the "
            "weights with --quantization instead."
        )
    if quantization not in (None, fast_cpu):
        raise UserError(
            f"--fast_cpu {fast_cpu} and --quantization {quantization} disagree: pass one."
        )
    return fast_cpu
