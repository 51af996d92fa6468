"""Configuration of the original Transformer (Vaswani et al., 2017, "Attention Is All You Need").

The defaults are the paper's *base* model (Table 3, first row). Field names follow the ecosystem's
seq2seq configs (Marian, BART) so that generation and other Hugging Face tooling find them; the
paper's symbols are given next to each field.
"""

import dataclasses
import functools
import math

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError
from transformers import GenerationConfig, PreTrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

ATTENTION_SCALINGS = ("sqrt_dk", "key_norm_sum")
POSITION_ENCODINGS = ("sinusoidal", "learned")
# Activations the position-wise feed-forward network accepts (Section 3.3 uses ReLU).
ACTIVATIONS = ("relu", "gelu", "gelu_new", "silu", "swish", "tanh")
TOKEN_ID_FIELDS = ("pad_token_id", "bos_token_id", "decoder_start_token_id")
# Padding and the decoder's first input are built from these: they cannot be None.
REQUIRED_TOKEN_ID_FIELDS = ("pad_token_id", "decoder_start_token_id")
# Far beyond any sentence; a learned table of 2**20 positions at d_model 512 is already 2 GB, and
# 10**12 would end in an allocator error deep inside torch.
MAX_POSITIONS = 1 << 20
# Keys transformers writes into config.json (or accepted there) besides the config's own fields.
TRANSFORMERS_WRITTEN_KEYS = {
    "auto_map",
    "custom_pipelines",
    "name_or_path",
    "_name_or_path",
    "_commit_hash",
    "transformers_version",
    "architectures",
    "dtype",
    "torch_dtype",
    "attn_implementation",
    "_attn_implementation",
    "_attn_implementation_autoset",
}


@functools.cache
def _known_config_keys() -> frozenset:
    """Every key a config.json may hold without being a typo: our fields and aliases, the base
    class's fields and attributes, and the generation parameters older releases stored there."""
    known = set(TRANSFORMERS_WRITTEN_KEYS)
    known |= {f.name for f in dataclasses.fields(PreTrainedConfig)}
    known |= set(PreTrainedConfig().to_dict())
    known |= {name for name in dir(PreTrainedConfig) if not name.startswith("__")}
    known |= set(GenerationConfig().to_dict())
    return frozenset(known)


TRANSLATION_PIPELINE = {
    "translation": {
        "impl": "pipeline_vanilla_transformer.TranslationPipeline",
        "pt": ["AutoModelForSeq2SeqLM"],
        "type": "text",
    }
}


# Sizes that must be positive integers (their type, int, is checked by `@strict` on assignment).
SIZE_FIELDS = (
    "vocab_size",
    "d_model",
    "encoder_layers",
    "decoder_layers",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "max_position_embeddings",
)


def _value_errors(cls):
    """`@strict` reports a bad field as huggingface_hub's `StrictDataclassError`, which is not a
    `ValueError`; callers (and transformers' loaders) expect one. Re-raise it as a `ValueError`
    whose message is the cause's, which names the field."""

    def converting(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except StrictDataclassError as err:
                message = str(err.__cause__ if err.__cause__ is not None else err)
                if not message.startswith(cls.__name__):
                    message = f"{cls.__name__}: {message}"
                raise ValueError(message) from err

        return wrapper

    for name in ("__init__", "__setattr__", "validate"):
        setattr(cls, name, converting(getattr(cls, name)))
    return cls


@_value_errors
@strict
class VanillaTransformerConfig(PreTrainedConfig):
    r"""
    Configuration of [`VanillaTransformerModel`] and [`VanillaTransformerForConditionalGeneration`].

    Args:
        vocab_size (`int`, defaults to 37000):
            Size of the shared source/target vocabulary (the paper's byte-pair vocabulary for EN-DE).
        d_model (`int`, defaults to 512):
            Model width, the paper's d_model.
        encoder_layers / decoder_layers (`int`, defaults to 6):
            Number of layers N in each stack (Section 3.1).
        encoder_attention_heads / decoder_attention_heads (`int`, defaults to 8):
            Number of heads h; d_k = d_v = d_model / h (Section 3.2.2).
        encoder_ffn_dim / decoder_ffn_dim (`int`, defaults to 2048):
            Inner size of the position-wise feed-forward network, the paper's d_ff (Section 3.3).
        dropout (`float`, defaults to 0.1):
            P_drop: applied to every sub-layer output before the residual add and to the sums of
            embeddings and positional encodings (Section 5.4).
        attention_dropout (`float`, defaults to 0.0):
            Dropout on the attention weights (not in the paper; tensor2tensor's option).
        activation_dropout (`float`, defaults to 0.0):
            Dropout after the feed-forward activation (not in the paper).
        activation_function (`str`, defaults to `"relu"`):
            Activation of the feed-forward network: one of `ACTIVATIONS`.
        max_position_embeddings (`int`, defaults to 1024):
            Size of the learned position table (`position_encoding="learned"`): longer inputs
            raise a `ValueError`, and `generate()` caps its output length at it. Sinusoidal
            encodings keep no table (they are computed from the positions themselves) and extend
            to any length; for them this only sizes tables that exporters write (e.g. CTranslate2).
        scale_embedding (`bool`, defaults to `True`):
            Multiply embeddings by sqrt(d_model) (Section 3.4).
        tie_word_embeddings (`bool`, defaults to `True`):
            One matrix for source embeddings, target embeddings and the pre-softmax projection
            (Section 3.4).
        init_std (`float` or `None`, defaults to `None`):
            `None` keeps tensor2tensor's initialisation, which the paper's code used: Xavier-uniform
            projections and N(0, d_model^-0.5) embeddings, so that scaled embeddings have unit
            variance like the positional encodings. A float draws every weight from N(0, init_std).
        position_encoding (`str`, defaults to `"sinusoidal"`):
            `"sinusoidal"` (Section 3.5) or `"learned"` (Table 3, row E).
        norm_first (`bool`, defaults to `False`):
            `False` is the paper's post-LN, LayerNorm(x + Dropout(Sublayer(x))). `True` is pre-LN,
            x + Dropout(Sublayer(LayerNorm(x))) with a final LayerNorm per stack, which trains more
            stably with large learning rates, deep stacks or short warm-ups (Xiong et al., 2020).
        attention_scaling (`str`, defaults to `"sqrt_dk"`):
            `"sqrt_dk"` divides q.k by sqrt(d_k) (Equation 1). `"key_norm_sum"` divides q.k_j by
            sum_j ||k_j||_2 over the keys that query may attend to, per head and per query
            (Bernhard, 2023, arXiv 2311.09406); padded and future keys are excluded from the sum.
        pad_token_id / bos_token_id / eos_token_id (`int`, defaults to 0 / 1 / 2):
            Special tokens; the project's tokenizer uses `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3.
        decoder_start_token_id (`int`, defaults to 1):
            First decoder input (`<s>`); labels are shifted right behind it.
        use_cache (`bool`, defaults to `True`):
            Return the key/value cache for incremental decoding.
    """

    model_type = "vanilla_transformer"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]  # the name before transformers 5.24
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "encoder_attention_heads",
        "num_hidden_layers": "encoder_layers",
    }

    vocab_size: int = 37000
    d_model: int = 512
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 8
    decoder_attention_heads: int = 8
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    dropout: float | int = 0.1
    attention_dropout: float | int = 0.0
    activation_dropout: float | int = 0.0
    activation_function: str = "relu"
    max_position_embeddings: int = 1024
    scale_embedding: bool = True
    tie_word_embeddings: bool = True
    init_std: float | int | None = None
    position_encoding: str = "sinusoidal"
    norm_first: bool = False
    attention_scaling: str = "sqrt_dk"
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    decoder_start_token_id: int | None = 1
    use_cache: bool = True
    is_encoder_decoder: bool = True

    def __post_init__(self, **kwargs):
        self._warn_unknown_keys(kwargs)
        super().__post_init__(**kwargs)
        # transformers v5 has no built-in `translation` task; this entry (saved in config.json,
        # with the pipeline file saved beside the model code) lets `pipeline("translation", ...)`
        # find ours.
        if not getattr(self, "custom_pipelines", None):
            self.custom_pipelines = TRANSLATION_PIPELINE

    def _warn_unknown_keys(self, extra: dict) -> None:
        """A key that is neither a field of this config nor one transformers writes is most likely
        a typo (`d_modle`): it would be stored and ignored, leaving the default in force."""
        fields = {f.name for f in dataclasses.fields(self)}
        ours = fields | set(self.attribute_map)
        unknown = sorted(k for k in extra if k not in ours and k not in _known_config_keys())
        if unknown:
            own = sorted(fields - {f.name for f in dataclasses.fields(PreTrainedConfig)})
            logger.warning(
                f"VanillaTransformerConfig: unknown key(s) {unknown} are ignored (a typo of a "
                f"field name?). Its own fields are: {own}."
            )

    # Validation is transformers' `@strict` mechanism: each field's annotation is enforced on every
    # assignment (`"512"`, `32.0`, `True` or `None` for an `int` field), and the `validate_*` hooks
    # below run after construction, on load and before saving. `_value_errors` turns the errors
    # into `ValueError`s that name the field.

    def validate_architecture(self):
        """Sizes are positive, the position table bounded, and d_k = d_model / h an integer."""
        where = type(self).__name__
        for name in SIZE_FIELDS:
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"{where}.{name} must be a positive integer, got {getattr(self, name)!r}."
                )
        if self.max_position_embeddings > MAX_POSITIONS:
            raise ValueError(
                f"{where}.max_position_embeddings must be <= {MAX_POSITIONS}, got "
                f"{self.max_position_embeddings!r}."
            )
        for stack in ("encoder", "decoder"):
            heads = getattr(self, f"{stack}_attention_heads")
            if self.d_model % heads != 0:
                raise ValueError(
                    f"{where}.d_model ({self.d_model}) must be divisible by "
                    f"{stack}_attention_heads ({heads}): d_k = d_model / h must be an integer."
                )

    def validate_dropout(self):
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, name)
            if not 0 <= value < 1:  # False for NaN too
                raise ValueError(
                    f"{type(self).__name__}.{name} must be a probability in [0, 1), got {value!r}."
                )

    def validate_choices(self):
        choices = {
            "attention_scaling": ATTENTION_SCALINGS,
            "position_encoding": POSITION_ENCODINGS,
            "activation_function": ACTIVATIONS,
        }
        for name, accepted in choices.items():
            if getattr(self, name) not in accepted:
                raise ValueError(
                    f"{type(self).__name__}.{name} must be one of {list(accepted)}, got "
                    f"{getattr(self, name)!r}."
                )

    def validate_init_std(self):
        if self.init_std is not None and not (math.isfinite(self.init_std) and self.init_std > 0):
            raise ValueError(
                f"{type(self).__name__}.init_std must be None (tensor2tensor initialisation) or "
                f"a positive float, got {self.init_std!r}."
            )

    def validate_token_ids(self):
        """Stricter than transformers' own hook (which only warns): every special token id is
        inside the vocabulary, and padding and the decoder's first input exist."""
        where = type(self).__name__
        for name in REQUIRED_TOKEN_ID_FIELDS:
            if getattr(self, name) is None:
                raise ValueError(
                    f"{where}.{name} must be a token id in [0, vocab_size={self.vocab_size}), got "
                    "None: padding and the decoder's first input are built from it."
                )
        if isinstance(self.eos_token_id, list) and not self.eos_token_id:
            raise ValueError(
                f"{where}.eos_token_id must be a token id or a non-empty list of them, got []."
            )
        eos = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        token_ids = [(name, getattr(self, name)) for name in TOKEN_ID_FIELDS]
        for name, value in token_ids + [("eos_token_id", value) for value in eos]:
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"{where}.{name} must be a token id in [0, vocab_size={self.vocab_size}), "
                    f"got {getattr(self, name)!r}."
                )


__all__ = ["VanillaTransformerConfig"]
