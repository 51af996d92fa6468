"""vanilla-transformer: the original Transformer (Vaswani et al., 2017) for Hugging Face transformers.

Importing the package registers the model with the Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForSeq2SeqLM`) and marks the classes so that `save_pretrained` writes their code and
`auto_map` beside the weights: a saved folder or Hub repo then loads with `trust_remote_code=True`
where this package is not installed.

Pipelines: transformers v5 removed the `translation` task and refuses the name before looking at any
registry. Importing the package registers the task `vanilla-translation` (`PIPELINE_REGISTRY`, the
supported way to add a task), so `pipeline("vanilla-translation", model=folder_or_model,
tokenizer=...)` needs no remote code; `translation_pipeline(model)` builds the same pipeline.
`pipeline("translation", model=folder, trust_remote_code=True)` uses the code saved beside the
weights; without `trust_remote_code` transformers refuses it, and its "task translation has been
removed" message is extended to name these two ways.
"""

# First: its logging filters must be in place before transformers imports torchao.
from . import quiet_imports  # noqa: F401

# isort: split
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM
from transformers import pipelines as _pipelines

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

PIPELINE_TASK = "vanilla-translation"
if PIPELINE_TASK not in _pipelines.PIPELINE_REGISTRY.get_supported_tasks():
    _pipelines.PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK, pipeline_class=TranslationPipeline, pt_model=AutoModelForSeq2SeqLM
    )
_ADVICE = (
    " For vanilla-transformer models: vanilla_transformer.translation_pipeline(model) or "
    f"pipeline({PIPELINE_TASK!r}, model=...) after `import vanilla_transformer`."
)
if _ADVICE not in _pipelines.REMOVED_TASKS.get("translation", _ADVICE):  # the message only
    _pipelines.REMOVED_TASKS["translation"] += _ADVICE


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
        from .loading import load_tokenizer  # names a folder that has none

        tokenizer = load_tokenizer(tokenizer)
    return TranslationPipeline(model=model, tokenizer=tokenizer, **kwargs)


__all__ = [
    "VanillaTransformerConfig",
    "VanillaTransformerModel",
    "VanillaTransformerForConditionalGeneration",
    "VanillaTransformerPreTrainedModel",
    "TranslationPipeline",
    "translation_pipeline",
    "PIPELINE_TASK",
    "optimize_for_cpu_inference",
    "__version__",
]
