"""Export a trained model to other runtimes: CTranslate2 (`export.ctranslate2`) and ONNX Runtime
(`export.onnx`). Each submodule imports its runtime only when used (`pip install -e '.[export]'`).
"""

__all__ = ["ctranslate2", "onnx"]
