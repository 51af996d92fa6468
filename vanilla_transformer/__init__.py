"""vanilla-transformer: the original Transformer (Vaswani et al., 2017) for Hugging Face transformers.

Importing the package registers the model with the Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForSeq2SeqLM`) and marks the classes so that `save_pretrained` writes their code and
`auto_map` beside the weights: a saved folder or Hub repo then loads with `trust_remote_code=True`
where this package is not installed.
"""

# First: its logging filters must be in place before transformers imports torchao.
from . import quiet_imports  # noqa: F401

# isort: split
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from .configuration_vanilla_transformer import VanillaTransformerConfig
from .inference import optimize_for_cpu_inference
from .modeling_vanilla_transformer import (
    VanillaTransformerForConditionalGeneration,
    VanillaTransformerModel,
    VanillaTransformerPreTrainedModel,
)
from .pipeline_vanilla_transformer import TranslationPipeline

__version__ = "0.1.0"

AutoConfig.register(VanillaTransformerConfig.model_type, VanillaTransformerConfig, exist_ok=True)
AutoModel.register(VanillaTransformerConfig, VanillaTransformerModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(
    VanillaTransformerConfig, VanillaTransformerForConditionalGeneration, exist_ok=True
)
VanillaTransformerConfig.register_for_auto_class()
VanillaTransformerModel.register_for_auto_class("AutoModel")
VanillaTransformerForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")


def translation_pipeline(
    model, tokenizer=None, fast_cpu: str | None = None, **kwargs
) -> TranslationPipeline:
    """The translation pipeline without remote code: `model` is a loaded model or a folder / Hub
    id; `tokenizer` defaults to the one saved with it. `fast_cpu` ("int8", "bf16" or "fp32")
    decodes on the opt-in fast CPU path (`optimize_for_cpu_inference`, applied to a copy). Extra
    kwargs go to the pipeline (e.g. `device`, or generation defaults such as `num_beams`)."""
    if isinstance(model, str):
        tokenizer = tokenizer if tokenizer is not None else model
        model = AutoModelForSeq2SeqLM.from_pretrained(model)
    if fast_cpu is not None:
        model = optimize_for_cpu_inference(model, fast_cpu)
    if tokenizer is None:
        tokenizer = model.name_or_path
    if isinstance(tokenizer, str):
        from .publishing.safety import load_tokenizer  # names a folder that has none

        tokenizer = load_tokenizer(tokenizer)
    return TranslationPipeline(model=model, tokenizer=tokenizer, **kwargs)


__all__ = [
    "VanillaTransformerConfig",
    "VanillaTransformerModel",
    "VanillaTransformerForConditionalGeneration",
    "VanillaTransformerPreTrainedModel",
    "TranslationPipeline",
    "translation_pipeline",
    "optimize_for_cpu_inference",
    "__version__",
]
