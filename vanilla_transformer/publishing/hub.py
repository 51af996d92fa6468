"""Publishing a trained model: model card, Hub folder, and one upload.

- `render_model_card(card_info)`: the card from `model_cards/model_card.md` (Jinja)
  and `huggingface_hub.ModelCardData` metadata (`pipeline_tag: translation`, languages, licence,
  datasets, and a `model-index` with the test BLEU and chrF). Every required value must be given:
  a missing or placeholder value raises a `ValueError` naming all of them, so no card is ever
  written with blanks.
- `save_hub_folder(model, tokenizer, folder, card_info)`: `save_pretrained` (weights, config,
  generation config, the remote code and the translation pipeline file), the tokenizer, and the
  card as `README.md`, written to a temporary folder and renamed into place.
- `push_folder(folder, repo_id, ...)`: `HfApi.create_repo(exist_ok=True)` and ONE
  `HfApi.upload_folder`. Not `push_to_hub`, which replaces `README.md` with a template. With
  `dry_run_dir` nothing is sent: the exact files that would be uploaded and the calls that would be
  made are written there and checked.

Publishing safety (docs/reliability.md): `push_folder` uploads a staged copy. The folder it
publishes is never written (nor, through a symlink, anything else; nor a huggingface_hub cache),
and nothing outside it is read: a symlink leaving it is refused, naming the link and its target
(`readable_model_files`). A cache snapshot's links are read from that cache repo's blobs.

Tokens: only huggingface_hub's own resolution (`hf auth login`, or the `HF_TOKEN` environment
variable) or an explicit `token=` argument. A token is never logged, printed, or written to a
card or a dry-run plan, and a folder whose text files contain one is refused.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

import jinja2
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants, get_token
from huggingface_hub.utils import (
    DEFAULT_IGNORE_PATTERNS,
    HFValidationError,
    filter_repo_objects,
    validate_repo_id,
)
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from ..errors import UserError
from ..recipe.run_folder import sha256_file as _sha256

logger = logging.getLogger(__name__)

__all__ = [
    "REQUIRED_CARD_FIELDS",
    "OPTIONAL_CARD_FIELDS",
    "render_model_card",
    "validate_model_card",
    "check_hub_folder",
    "save_hub_folder",
    "push_folder",
    "prepare_model_folder",
    "refresh_remote_code",
    "read_card_info",
    "write_card_info",
]


def _card_template():
    """The repository's top-level `model_cards/model_card.md` in a checkout; in an installed wheel
    the same file, shipped as `vanilla_transformer.model_cards` package data (pyproject.toml)."""
    checkout = Path(__file__).resolve().parents[2] / "model_cards" / "model_card.md"
    if checkout.is_file():
        return checkout
    return importlib.resources.files("vanilla_transformer.model_cards") / "model_card.md"


TEMPLATE = _card_template()

# Every value the card states. `save_hub_folder` fills `config`, `num_parameters` and
# `generation` from the model when they are absent.
REQUIRED_CARD_FIELDS = {
    "model_name": "name in the card title and the model-index (str)",
    "repo_id": "Hub repo id shown in the usage example, 'owner/name' (str)",
    "src_lang": "source language code, e.g. 'en' (str)",
    "tgt_lang": "target language code, e.g. 'es' (str)",
    "dataset_name": "human-readable name of the training data (str)",
    "dataset_id": "dataset id for the model-index: a Hub id or a local name (str)",
    "dataset_description": "a paragraph on the training data: source, licence, domain (str)",
    "train_samples": "number of training pairs (int)",
    "train_steps": "number of optimizer updates (int)",
    "train_tokens": "tokens processed in training (int; see train_tokens_description)",
    "hardware": "what it was trained on, e.g. '2 CPU cores' (str)",
    "training_time": "wall-clock training time: seconds (number) or a str such as '25 min'",
    "hyperparameters": "training hyperparameters (non-empty dict: name -> value)",
    # The evaluation values (EVALUATION_FIELDS) are required together or absent together: a model
    # with no test split gets a card that says "not evaluated" and carries no model-index.
    "test_bleu": "corpus BLEU on the test split, in [0, 100] (number)",
    "test_chrf": "corpus chrF on the test split, in [0, 100] (number)",
    "test_samples": "number of test pairs scored (int)",
    "bleu_signature": "sacrebleu BLEU signature, 'nrefs:1|case:mixed|...' (str)",
    "chrf_signature": "sacrebleu chrF signature, 'nrefs:1|case:mixed|...' (str)",
    "num_beams": "beams used for the reported scores (int)",
    "length_penalty": "length penalty used for the reported scores (number)",
    "intended_use": "a paragraph on what the model is for (str)",
    "limitations": "known limitations (non-empty list of str)",
    "example_source": "a source sentence for the usage example (str)",
    "config": "the model config as a dict (model.config.to_dict())",
    "num_parameters": "number of distinct parameters (int; tied matrices counted once)",
}
EVALUATION_FIELDS = (
    "test_bleu",
    "test_chrf",
    "test_samples",
    "bleu_signature",
    "chrf_signature",
    "num_beams",
    "length_penalty",
)
OPTIONAL_CARD_FIELDS = {
    "license": "apache-2.0",
    "eval_split": "test",
    "dataset_config": None,  # e.g. 'kjv-rv1909', the model-index dataset config
    "dataset_card": None,  # Markdown of the data card, embedded in a <details> block
    "hub_datasets": [],  # Hub dataset ids for the `datasets:` metadata (none: no entry)
    "base_model": None,  # Hub id of the model this one was fine-tuned from
    "averaging": None,  # e.g. 'mean of the last 5 checkpoints (written every 500 updates)'
    "validation_bleu": None,
    "validation_chrf": None,
    "validation_samples": None,
    "validation_split": "validation",
    "tags": [],
    "train_tokens_description": "source + target tokens, padding excluded",
    "generation": {"num_beams": 4, "length_penalty": 0.6},  # the model's generation defaults
}

_LANGUAGE_NAMES = {
    "en": "English", "es": "Spanish", "de": "German", "fr": "French", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "ro": "Romanian", "cs": "Czech", "ru": "Russian",
    "zh": "Chinese", "ja": "Japanese", "ar": "Arabic", "fi": "Finnish", "tr": "Turkish",
}  # fmt: skip
_PLACEHOLDER_RE = re.compile(
    r"^\s*(todo|tbd|tba|fixme|n/?a|none|null|\?+|x{3,}|\.{3}|<[^>]*>)\s*$", re.IGNORECASE
)
# User access tokens look like `hf_` + 30+ letters/digits.
_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{30,}")
_INT_FIELDS = (
    "train_samples",
    "train_steps",
    "train_tokens",
    "test_samples",
    "num_beams",
    "num_parameters",
)
_SCORE_FIELDS = ("test_bleu", "test_chrf")
# What a model repo holds; nothing else is uploaded (no pickles such as training_args.bin, no
# optimizer states, no local notes).
ALLOWED_FILES = [
    "README.md",
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "configuration_vanilla_transformer.py",
    "modeling_vanilla_transformer.py",
    "pipeline_vanilla_transformer.py",
]
# The code a repo runs with trust_remote_code: refreshed from the installed package on every push.
REMOTE_CODE_FILES = (
    "configuration_vanilla_transformer.py",
    "modeling_vanilla_transformer.py",
    "pipeline_vanilla_transformer.py",
)
# Card values kept beside the weights (not uploaded), so the push tool can re-render the card.
CARD_INFO_FILE = "card_info.json"
REQUIRED_HUB_FILES = (
    "README.md",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "configuration_vanilla_transformer.py",
    "modeling_vanilla_transformer.py",
    "pipeline_vanilla_transformer.py",
)
WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)  # safetensors only on the Hub
# Never uploaded besides huggingface_hub's own defaults (.git, .cache/huggingface).
IGNORE_PATTERNS = [".*", "*/.*", "*__pycache__*", "*.pyc", "*.tmp"]
DRY_RUN_PLAN = "upload_plan.json"
NOT_EVALUATED = "Not evaluated"
DRY_RUN_FILES = "repo"


# ------------------------------------------------------------------------------------------------
# Card values
# ------------------------------------------------------------------------------------------------


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip() or bool(_PLACEHOLDER_RE.match(value))
    if isinstance(value, (list, tuple, dict, set)):
        return len(value) == 0
    return False


def _check_card_info(card_info: Mapping) -> dict:
    """Defaults applied, required values present and well-typed; raises `ValueError` otherwise."""
    if not isinstance(card_info, Mapping):
        raise TypeError(f"card_info must be a dict, got {type(card_info).__name__}.")
    info = {**OPTIONAL_CARD_FIELDS, **{k: v for k, v in card_info.items() if v is not None}}
    info["evaluated"] = any(info.get(name) is not None for name in EVALUATION_FIELDS)
    required = [
        name for name in REQUIRED_CARD_FIELDS if info["evaluated"] or name not in EVALUATION_FIELDS
    ]
    missing = [name for name in required if _is_missing(info.get(name))]
    if missing:
        details = "; ".join(f"{name}: {REQUIRED_CARD_FIELDS[name]}" for name in missing)
        raise ValueError(f"card_info is missing required values: {', '.join(missing)} ({details}).")
    for name in _INT_FIELDS:
        if name not in required:
            continue
        value = info[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"card_info[{name!r}] must be a non-negative int, got {value!r}.")
    for name in _SCORE_FIELDS + ("validation_bleu", "validation_chrf"):
        value = info.get(name)
        if value is None and (name.startswith("validation") or not info["evaluated"]):
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and 0 <= value <= 100)
        ):
            raise ValueError(f"card_info[{name!r}] must be a number in [0, 100], got {value!r}.")
    for name in ("bleu_signature", "chrf_signature") if info["evaluated"] else ():
        if not str(info[name]).startswith("nrefs:"):
            raise ValueError(
                f"card_info[{name!r}] must be a sacrebleu signature ('nrefs:1|case:mixed|...'), "
                f"got {info[name]!r}."
            )
    if not isinstance(info["hyperparameters"], Mapping):
        raise ValueError(
            f"card_info['hyperparameters'] must be a dict, got {type(info['hyperparameters'])}."
        )
    if not isinstance(info["config"], Mapping):
        raise ValueError(f"card_info['config'] must be a dict, got {type(info['config'])}.")
    limitations = info["limitations"]
    if isinstance(limitations, str) or any(_is_missing(item) for item in limitations):
        raise ValueError(
            f"card_info['limitations'] must be a list of non-empty strings, got {limitations!r}."
        )
    time = info["training_time"]
    if isinstance(time, bool) or (isinstance(time, (int, float)) and not time > 0):
        raise ValueError(
            f"card_info['training_time'] must be positive seconds or a str, got {time!r}."
        )
    validate_repo_id(info["repo_id"])
    return info


def _duration(value) -> str:
    if isinstance(value, str):
        return value
    seconds = round(value)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def _cell(value) -> str:
    """A value printed in a Markdown table cell."""
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _architecture(config: Mapping, num_parameters: int) -> tuple[list[tuple[str, str]], list[str]]:
    """Table rows and the list of deviations from the paper, from a config dict."""
    c = dict(config)
    get = c.get
    d_model, heads = get("d_model"), get("encoder_attention_heads")
    ffn = get("encoder_ffn_dim")
    if get("decoder_ffn_dim") not in (None, ffn):
        ffn = f"{ffn} (encoder) / {get('decoder_ffn_dim')} (decoder)"
    if get("decoder_attention_heads") not in (None, heads):
        heads = f"{heads} (encoder) / {get('decoder_attention_heads')} (decoder)"
    tied = get("tie_word_embeddings", True)
    rows = [
        (
            "Parameters",
            f"{num_parameters:,}"
            + (
                " (one matrix shared by source and target embeddings and the output projection)"
                if tied
                else ""
            ),
        ),
        ("Layers N (encoder + decoder)", f"{get('encoder_layers')} + {get('decoder_layers')}"),
        ("d_model", _cell(d_model)),
        ("d_ff", _cell(ffn)),
        ("Heads h", _cell(heads)),
        ("Vocabulary", f"{get('vocab_size'):,} (joint source/target)"),
        ("Positional encoding", _cell(get("position_encoding", "sinusoidal"))),
        ("Residual blocks", "pre-LN" if get("norm_first") else "post-LN (as in the paper)"),
        ("Attention scaling", _cell(get("attention_scaling", "sqrt_dk"))),
        ("Activation", _cell(get("activation_function", "relu"))),
        ("Dropout P_drop", _cell(get("dropout"))),
        ("Max positions", _cell(get("max_position_embeddings"))),
    ]
    deviations = []
    if get("norm_first"):
        deviations.append("pre-LN residual blocks (`norm_first=True`) instead of post-LN.")
    if get("position_encoding", "sinusoidal") != "sinusoidal":
        deviations.append(
            f"`position_encoding={get('position_encoding')!r}` instead of sinusoids "
            "(Table 3, row E)."
        )
    if get("attention_scaling", "sqrt_dk") != "sqrt_dk":
        deviations.append(
            f"`attention_scaling={get('attention_scaling')!r}` instead of 1/sqrt(d_k)."
        )
    if get("activation_function", "relu") != "relu":
        deviations.append(f"`activation_function={get('activation_function')!r}` instead of ReLU.")
    if not get("scale_embedding", True):
        deviations.append("embeddings not multiplied by sqrt(d_model) (`scale_embedding=False`).")
    if not tied:
        deviations.append("untied embeddings and output projection (`tie_word_embeddings=False`).")
    for name in ("attention_dropout", "activation_dropout"):
        if get(name):
            deviations.append(f"`{name}={get(name)}` (not in the paper).")
    if get("init_std") is not None:
        deviations.append(f"initialisation N(0, {get('init_std')}) (`init_std`).")
    return rows, deviations


def _demote_headings(markdown: str) -> str:
    """Strip YAML front matter and push headings two levels down, to nest a data card."""
    text = re.sub(r"\A---\n.*?\n---\n", "", markdown.strip() + "\n", flags=re.S)
    return re.sub(
        r"^(#{1,4}) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", text, flags=re.M
    ).strip()


def _card_data(info: Mapping) -> ModelCardData:
    dataset_type = info["hub_datasets"][0] if info["hub_datasets"] else info["dataset_id"]
    common = dict(
        task_type="translation",
        task_name="Translation",
        dataset_type=dataset_type,
        dataset_name=info["dataset_name"],
        dataset_config=info["dataset_config"],
    )
    results = []
    if info["evaluated"]:  # no model-index for a model without test scores
        results = [
            EvalResult(
                **common,
                dataset_split=info["eval_split"],
                metric_type="bleu",
                metric_name="BLEU",
                metric_value=round(float(info["test_bleu"]), 2),
            ),
            EvalResult(
                **common,
                dataset_split=info["eval_split"],
                metric_type="chrf",
                metric_name="chrF",
                metric_value=round(float(info["test_chrf"]), 2),
            ),
        ]
    for metric, name in (("bleu", "BLEU"), ("chrf", "chrF")):
        value = info.get(f"validation_{metric}")
        if value is not None and info["evaluated"]:
            results.append(
                EvalResult(
                    **common,
                    dataset_split=info["validation_split"],
                    metric_type=metric,
                    metric_name=name,
                    metric_value=round(float(value), 2),
                )
            )
    tags = ["translation", "vanilla-transformer", "encoder-decoder", "custom_code"]
    tags += [t for t in info["tags"] if t not in tags]
    return ModelCardData(
        language=[info["src_lang"], info["tgt_lang"]],
        license=info["license"],
        library_name="transformers",
        pipeline_tag="translation",
        tags=tags,
        # Only real Hub dataset ids: a local corpus name would link to a page that does not exist.
        datasets=list(info["hub_datasets"]) or None,
        metrics=["bleu", "chrf"],
        base_model=info["base_model"],
        model_name=info["model_name"] if results else None,
        eval_results=results or None,
    )


def render_model_card(card_info: dict, template_path: str | Path | None = None) -> ModelCard:
    """Render the model card from `card_info` (see `REQUIRED_CARD_FIELDS` and
    `OPTIONAL_CARD_FIELDS`; `vanilla_transformer.recipe.bible.bible_card_info()` gives the Bible corpus' values).

    Raises:
        ValueError: required values missing or placeholders (all of them named), values of the
            wrong type or range, or a rendered card that fails `validate_model_card`.
    """
    info = _check_card_info(card_info)
    template = Path(template_path) if template_path is not None else TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(f"model card template {template} not found.")
    text = (
        _template_environment()
        .from_string(template.read_text(encoding="utf-8"))
        .render(**_template_values(info))
    )
    card = ModelCard(text)
    problems = validate_model_card(card)
    if problems:
        raise ValueError("the rendered model card is invalid: " + "; ".join(problems))
    return card


def _template_environment() -> jinja2.Environment:
    """Jinja for a Markdown card: undefined names fail, no HTML escaping."""
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    environment.filters["capitalize_first"] = lambda text: text[:1].upper() + text[1:]
    return environment


def _evaluation_rows(info: dict) -> list[dict]:
    """The card's results table: the test split, then validation where it was scored."""
    if not info["evaluated"]:
        return []
    rows = [
        {
            "split": info["eval_split"],
            "samples": f"{info['test_samples']:,}",
            "bleu": f"{info['test_bleu']:.2f}",
            "chrf": f"{info['test_chrf']:.2f}",
        }
    ]
    if info.get("validation_bleu") is not None:
        samples, chrf = info.get("validation_samples"), info.get("validation_chrf")
        rows.append(
            {
                "split": info["validation_split"],
                "samples": f"{samples:,}" if samples else "",
                "bleu": f"{info['validation_bleu']:.2f}",
                "chrf": "" if chrf is None else f"{chrf:.2f}",
            }
        )
    return rows


def _template_values(info: dict) -> dict:
    """The names the card template reads, formatted from checked `card_info`."""
    arch_rows, deviations = _architecture(info["config"], info["num_parameters"])
    training_rows = [
        ("Updates (optimizer steps)", f"{info['train_steps']:,}"),
        (f"Tokens ({info['train_tokens_description']})", f"{info['train_tokens']:,}"),
        ("Training pairs", f"{info['train_samples']:,}"),
        ("Hardware", _cell(info["hardware"])),
        ("Wall-clock time", _duration(info["training_time"])),
    ]
    evaluated = info["evaluated"]
    generation = {**OPTIONAL_CARD_FIELDS["generation"], **(info.get("generation") or {})}
    return dict(
        card_data=_card_data(info).to_yaml(),
        model_name=info["model_name"],
        repo_id=info["repo_id"],
        base_model=info["base_model"],
        src_name=_LANGUAGE_NAMES.get(info["src_lang"], info["src_lang"]),
        tgt_name=_LANGUAGE_NAMES.get(info["tgt_lang"], info["tgt_lang"]),
        dataset_name=info["dataset_name"],
        dataset_id=info["dataset_id"],
        dataset_description=info["dataset_description"].strip(),
        dataset_card=_demote_headings(info["dataset_card"]) if info["dataset_card"] else None,
        train_samples=f"{info['train_samples']:,}",
        architecture_rows=arch_rows,
        deviations=deviations,
        training_rows=training_rows,
        hyperparameter_rows=[(_cell(k), _cell(v)) for k, v in info["hyperparameters"].items()],
        averaging=info["averaging"],
        evaluated=evaluated,
        eval_split=info["eval_split"],
        eval_samples=f"{info['test_samples']:,}" if evaluated else "",
        bleu=f"{info['test_bleu']:.2f}" if evaluated else "",
        chrf=f"{info['test_chrf']:.2f}" if evaluated else "",
        eval_rows=_evaluation_rows(info),
        bleu_signature=info.get("bleu_signature"),
        chrf_signature=info.get("chrf_signature"),
        num_beams=info.get("num_beams"),
        length_penalty=_cell(float(info["length_penalty"])) if evaluated else "",
        generation_num_beams=generation["num_beams"],
        generation_length_penalty=_cell(float(generation["length_penalty"])),
        example_literal=repr(info["example_source"].strip()),
        intended_use=info["intended_use"].strip(),
        limitations=[item.strip() for item in info["limitations"]],
    )


def validate_model_card(card: ModelCard | str | Path) -> list[str]:
    """Offline checks of a card (a `ModelCard` or a README.md path, read with `ModelCard.load`):
    the metadata the Hub needs for a translation model and no unrendered template or token.
    Returns the problems found (empty when valid)."""
    if not isinstance(card, ModelCard):
        path = Path(card)
        if not path.is_file():  # ModelCard.load would treat the string as a repo id
            return [f"{path} does not exist"]
        card = ModelCard.load(path)
    problems = []
    data = card.data
    if data.pipeline_tag != "translation":
        problems.append(f"pipeline_tag is {data.pipeline_tag!r}, expected 'translation'")
    if not data.language or len(data.language) < 2:
        problems.append(f"language must list the source and target languages, got {data.language}")
    if not data.license:
        problems.append("license is missing")
    results = data.eval_results or []
    body = card.text
    evaluated = "model-index" in data.to_dict()
    if not evaluated and NOT_EVALUATED not in body:
        problems.append(f"metadata has no model-index and the card does not say {NOT_EVALUATED!r}")
    metrics = {r.metric_type for r in results}
    for metric in ("bleu", "chrf") if evaluated else ():
        if metric not in metrics:
            problems.append(f"model-index has no {metric} result")
    for result in results:
        if not isinstance(result.metric_value, (int, float)):
            problems.append(f"model-index {result.metric_type} value {result.metric_value!r}")
    if "{{" in body or "{%" in body:
        problems.append("unrendered template syntax in the card")
    if evaluated and "nrefs:" not in body:
        problems.append("no sacrebleu signature in the card text")
    if _TOKEN_RE.search(str(card)):
        problems.append("the card contains what looks like a Hugging Face access token")
    return problems


# ------------------------------------------------------------------------------------------------
# Hub folder
# ------------------------------------------------------------------------------------------------


def check_hub_folder(folder: str | Path) -> list[str]:
    """Problems that would make `folder` a broken Hub repo (empty list when fine): a missing file
    (weights, config, tokenizer, remote code, pipeline, card), a config without `auto_map` or
    the `translation` custom pipeline, or an invalid card."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    problems = [f"missing {name}" for name in REQUIRED_HUB_FILES if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        problems.append(f"missing weights ({' or '.join(WEIGHT_FILES)})")
    if (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if "AutoModelForSeq2SeqLM" not in (config.get("auto_map") or {}):
            problems.append("config.json has no auto_map['AutoModelForSeq2SeqLM']")
        if "translation" not in (config.get("custom_pipelines") or {}):
            problems.append("config.json has no custom_pipelines['translation']")
    if (folder / "README.md").is_file():
        problems += [f"README.md: {p}" for p in validate_model_card(folder / "README.md")]
    return problems


def _fill_from_model(model, card_info: Mapping) -> dict:
    info = dict(card_info)
    if info.get("config") is None:
        info["config"] = model.config.to_dict()
    if info.get("num_parameters") is None:
        info["num_parameters"] = model.num_parameters()
    if info.get("generation") is None:
        generation = model.generation_config
        info["generation"] = {
            "num_beams": generation.num_beams,
            "length_penalty": generation.length_penalty,
        }
    return info


def _looks_like_hub_folder(folder: Path) -> bool:
    """An existing folder that `save_hub_folder` may replace: empty, or a previous Hub folder
    (files only, with README.md and config.json); never e.g. a run directory with checkpoints."""
    entries = list(folder.iterdir())
    if not entries:
        return True
    return all(p.is_file() for p in entries) and all(
        (folder / name).is_file() for name in ("README.md", "config.json")
    )


def save_hub_folder(model, tokenizer, folder: str | Path, card_info: dict) -> Path:
    """Write everything a Hub repo needs into `folder`: `model.save_pretrained` (weights, config,
    generation config, remote code and the pipeline file), `tokenizer.save_pretrained`, and the
    card as `README.md`. `card_info` as for `render_model_card`; `config`, `num_parameters` and
    `generation` are taken from the model when absent.

    The folder is written beside its destination and renamed into place, so a failure leaves the
    previous folder untouched. An existing `folder` is replaced only if it is empty or a previous
    Hub folder (files only, with README.md and config.json); anything else (a run directory, a
    plain save_pretrained folder) raises `FileExistsError`. Returns the folder.
    """
    folder = Path(folder)
    if folder.exists() and not (folder.is_dir() and _looks_like_hub_folder(folder)):
        raise FileExistsError(
            f"{folder} exists and is not a previous Hub folder (it has sub-folders, or no "
            "README.md and config.json); choose a new or empty folder."
        )
    card = render_model_card(_fill_from_model(model, card_info))  # fail before writing
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        card.save(tmp / "README.md")
        write_card_info(tmp, card_info)
        problems = check_hub_folder(tmp)
        if problems:
            raise RuntimeError(f"the Hub folder written for {folder} is incomplete: {problems}")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
    except BaseException:
        if old.exists() and not folder.exists():
            old.rename(folder)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    logger.info("Hub folder written to %s", folder)
    return folder


# ------------------------------------------------------------------------------------------------
# Any model folder: remote code, card values and card
# ------------------------------------------------------------------------------------------------

# Filled from the folder itself when a card is re-rendered; not kept in the sidecar.
_FROM_FOLDER = ("config", "num_parameters", "generation")


def write_card_info(folder: str | Path, card_info: Mapping) -> Path:
    """Keep the card values beside the weights (`card_info.json`, never uploaded), so that the
    push tool can re-render the card later, e.g. for another repo id."""
    values = {k: v for k, v in card_info.items() if k not in _FROM_FOLDER and v is not None}
    path = Path(folder) / CARD_INFO_FILE
    _replace_file(path, json.dumps(values, indent=2, default=str) + "\n")
    return path


def _replace_file(path: Path, data: str | bytes) -> None:
    """Write `path` as a new file (written beside it, then renamed over it): never through a
    symlink or a hard link that `path` may be, so no other file ever changes."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with tmp.open("xb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_card_info(folder: str | Path) -> dict:
    """The card values kept in `folder/card_info.json` (empty when there is none)."""
    path = Path(folder) / CARD_INFO_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def refresh_remote_code(folder: str | Path) -> list[str]:
    """Replace the remote-code files of a model folder (`REMOTE_CODE_FILES`) with the installed
    package's copies, and make `config.json` name them (`auto_map`, `custom_pipelines`).
    Checkpoints saved by earlier releases carry a modeling file that silently decodes wrongly on
    transformers >= 5.24; `trust_remote_code` users run whatever file the repo holds.
    Returns one line per change (empty when everything was current)."""
    from ..configuration_vanilla_transformer import TRANSLATION_PIPELINE
    from ..modeling_vanilla_transformer import AUTO_MAP

    folder = Path(folder)
    package = importlib.resources.files(__package__.rsplit(".", 1)[0])
    changes = []
    for name in REMOTE_CODE_FILES:
        current = (package / name).read_bytes()
        target = folder / name
        if not target.is_file():
            changes.append(f"added {name} (current package copy)")
        elif target.read_bytes() != current:
            changes.append(f"replaced {name} with the current package's copy")
        else:
            continue
        _replace_file(target, current)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    auto_map = {**(config.get("auto_map") or {}), **AUTO_MAP}
    pipelines = config.get("custom_pipelines") or TRANSLATION_PIPELINE
    if auto_map != config.get("auto_map") or pipelines != config.get("custom_pipelines"):
        config.update(auto_map=auto_map, custom_pipelines=pipelines)
        _replace_file(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
        changes.append("config.json: auto_map and custom_pipelines name the remote code")
    return changes


def _count_parameters(folder: Path) -> int:
    """Distinct parameters in the folder's safetensors weights (tied matrices are stored once)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                shape = f.get_slice(key).get_shape()
                total += math.prod(shape)
    return total


_REPO_ID_IN_USAGE = re.compile(r'((?:from_pretrained|translation_pipeline)\(|model=)"[^"\n]*"')


def prepare_model_folder(
    folder: str | Path, repo_id: str, overrides: Mapping | None = None, shown_as: str | None = None
):
    """Make a model folder (trained, averaged or fine-tuned) ready to publish as `repo_id`, in
    place: refresh its remote code, then write or refresh its card (`README.md`) with `repo_id`
    in the usage code. The card values come from the folder's `card_info.json` (written by
    training, averaging and fine-tuning) updated with `overrides`; a folder without one but with
    a card keeps its card, with the repo id in its usage code replaced. Files are replaced, never
    written through (`_replace_file`). `push_folder(..., prepare=True)` calls this on its staged
    copy, never on the folder it publishes.

    Returns one line per change. Raises `UserError` naming the card values still missing (and
    the folder, as `shown_as` when given)."""
    folder = Path(folder)
    shown = Path(shown_as) if shown_as is not None else folder
    _check_repo_id(repo_id)
    if not (folder / "config.json").is_file():
        raise UserError(f"{shown} has no config.json: not a model folder.")
    changes = refresh_remote_code(folder)
    info = {**read_card_info(folder), **(overrides or {})}
    readme = folder / "README.md"
    if not info and readme.is_file():
        text = readme.read_text(encoding="utf-8")
        new = _REPO_ID_IN_USAGE.sub(lambda m: f'{m.group(1)}"{repo_id}"', text)
        if new != text:
            _replace_file(readme, new)
            changes.append(f"README.md: usage code names {repo_id}")
        return changes
    info["repo_id"] = repo_id
    info.setdefault("model_name", repo_id.split("/")[-1])
    info["config"] = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    info["num_parameters"] = _count_parameters(folder)
    generation = folder / "generation_config.json"
    if generation.is_file():
        values = json.loads(generation.read_text(encoding="utf-8"))
        info["generation"] = {
            "num_beams": values.get("num_beams", 1),
            "length_penalty": values.get("length_penalty", 1.0),
        }
    try:
        card = render_model_card(info)
    except ValueError as err:
        raise UserError(
            f"cannot write the card of {shown}: {err} Give the values with --card_info FILE "
            f"(a JSON object), or keep them in {shown / CARD_INFO_FILE}."
        ) from None
    _replace_file(readme, str(card))
    write_card_info(folder, info)
    changes.append(f"README.md: card written for {repo_id}")
    return changes


# ------------------------------------------------------------------------------------------------
# Upload
# ------------------------------------------------------------------------------------------------


def upload_file_list(folder: str | Path) -> list[str]:
    """The paths (relative, POSIX) that `upload_folder(..., allow_patterns=ALLOWED_FILES,
    ignore_patterns=IGNORE_PATTERNS)` sends, by huggingface_hub's own filter: the allow-list of a
    model repo's file kinds only."""
    return _matching(_files_under(Path(folder)), ALLOWED_FILES)


def _files_under(root: Path) -> list[str]:
    """Every file name under `root` (relative, POSIX), symlinks included as names; a linked
    folder is not entered (`os.walk` without `followlinks`)."""
    names = []
    for dirpath, _, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        names += [(rel / name).as_posix() for name in filenames]
    return sorted(names)


def _matching(names: list[str], allow_patterns: list[str]) -> list[str]:
    ignore = IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS
    return list(filter_repo_objects(names, allow_patterns=allow_patterns, ignore_patterns=ignore))


def _file_contains(path: Path, needles: list[bytes], pattern: re.Pattern) -> bool:
    """Whether `path` holds any of `needles` or a match of `pattern`, read in overlapping chunks
    (a secret split across two chunks is still found)."""
    overlap = max([len(n) for n in needles] + [64])
    tail = b""
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            window = tail + chunk
            if any(n in window for n in needles) or pattern.search(window):
                return True
            tail = window[-overlap:]
    return False


_TOKEN_BYTES_RE = re.compile(_TOKEN_RE.pattern.encode())


def _check_no_token(
    folder: Path, files: list[str], token: str | None, shown_as: Path | None = None
) -> None:
    """Refuse to upload if ANY file about to be sent, whatever its name or kind, contains the
    token in use or anything token-shaped; the error names the file (in `shown_as`, the folder
    the user gave), never the token."""
    secrets = [t.encode() for t in (token, get_token()) if isinstance(t, str) and t]
    for name in files:
        if _file_contains(folder / name, secrets, _TOKEN_BYTES_RE):
            raise UserError(
                f"{(shown_as or folder) / name} contains a Hugging Face access token; refusing to upload. "
                "Remove it from the file (and revoke the token if it was ever shared)."
            )


# ------------------------------------------------------------------------------------------------
# The folder to publish: read only inside it, never written
# ------------------------------------------------------------------------------------------------


def _check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise UserError(f"{repo_id!r} is not a valid repo id ('owner/name'): {err}") from None


def hub_cache_blobs(folder: Path) -> Path | None:
    """The `blobs` folder of the huggingface_hub cache repo that `folder` (resolved) is a snapshot
    of, or lies in (`<repo>/snapshots/<revision>/...` with `<repo>/blobs` beside); else None.
    A snapshot's files are symlinks to `../../blobs/<hash>`: they are read there, never written."""
    for path in (folder, *folder.parents):
        if path.parent.name == "snapshots" and (path.parent.parent / "blobs").is_dir():
            return path.parent.parent / "blobs"
    return None


def _in_hub_cache(path: Path) -> bool:
    cache = Path(constants.HF_HUB_CACHE).expanduser().resolve()
    return path == cache or path.is_relative_to(cache) or hub_cache_blobs(path) is not None


def readable_model_files(folder: str | Path) -> dict[str, Path]:
    """The files of `folder` the push tool reads (the model files it may upload and
    `card_info.json`), each with the real path it is read from.

    Nothing outside the folder is ever read: a symlink is resolved and its target must lie in the
    folder (in a huggingface_hub cache snapshot: in the folder or its cache repo's `blobs`);
    otherwise `UserError` names the link and its target. A broken link or anything that is not a
    regular file (a FIFO, a device) is refused the same way. Linked sub-folders are not entered."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(
            f"{folder} is not a folder (expected a model folder: a run's hub/ folder, an "
            "averaged or a fine-tuned model)."
        )
    root = folder.resolve()
    roots = [root, *filter(None, [hub_cache_blobs(root)])]
    sources = {}
    for name in _matching(_files_under(root), ALLOWED_FILES + [CARD_INFO_FILE]):
        target = (root / name).resolve()
        if not any(target == r or target.is_relative_to(r) for r in roots):
            raise UserError(
                f"{folder / name} is a symlink to {target}, outside {folder}; refusing to publish "
                "a file from outside the folder. Copy the file into the folder instead."
            )
        if not target.is_file():
            raise UserError(
                f"{folder / name} is not a regular file (it resolves to {target}); only regular "
                "files are published. Replace it with the file itself."
            )
        sources[name] = target
    if "config.json" not in sources:
        raise UserError(
            f"{folder} has no config.json: not a model folder (expected a run's hub/ folder, an "
            "averaged or a fine-tuned model)."
        )
    return sources


def _stage(sources: Mapping[str, Path], staging: Path) -> None:
    """Copy each source into `staging` as a new regular file (the staging folder is new: nothing
    is written through a link, and the source is opened without following one)."""
    for name, source in sources.items():
        destination = staging / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(source, flags), "rb") as src, destination.open("xb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def _check_output_dir(dry_run_dir: Path, folder: Path) -> Path:
    """The dry-run folder neither holds nor lies in the folder to publish or a Hub cache."""
    out, source = dry_run_dir.resolve(), folder.resolve()
    if out == source or out.is_relative_to(source) or source.is_relative_to(out):
        raise UserError(
            f"dry_run_dir {dry_run_dir} overlaps the folder to publish {folder}; the push tool "
            "never writes into its input. Choose a folder outside it."
        )
    if _in_hub_cache(out):
        raise UserError(
            f"dry_run_dir {dry_run_dir} lies in a huggingface_hub cache; choose a folder outside "
            "it (the cache is never written)."
        )
    return dry_run_dir


def _check_token_available(token: str | None) -> None:
    if token is None and get_token() is None:
        raise UserError(
            "no Hugging Face token found: run `hf auth login` or set HF_TOKEN (a token with "
            "write access); or check the upload first with --dry_run DIR (needs no token)."
        )


# ------------------------------------------------------------------------------------------------
# Upload
# ------------------------------------------------------------------------------------------------


def _write_dry_run(staging: Path, files: list[str], dry_run_dir: Path, plan: dict) -> dict:
    if dry_run_dir.exists() and any(dry_run_dir.iterdir()):
        leftovers = {p.name for p in dry_run_dir.iterdir()} - {DRY_RUN_FILES, DRY_RUN_PLAN}
        if leftovers:
            raise UserError(
                f"dry_run_dir {dry_run_dir} holds other files ({sorted(leftovers)}); use a new or "
                "empty folder."
            )
    repo = dry_run_dir / DRY_RUN_FILES
    for path in (repo, dry_run_dir / DRY_RUN_PLAN):  # replaced, never written through
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
    repo.mkdir(parents=True)
    _stage({name: staging / name for name in files}, repo)
    plan["calls"][1]["kwargs"]["folder_path"] = str(repo.resolve())
    plan["files"] = [
        {"path": name, "size": (repo / name).stat().st_size, "sha256": _sha256(repo / name)}
        for name in files
    ]
    problems = [f"README.md: {p}" for p in validate_model_card(repo / "README.md")]
    if problems:
        raise ValueError(f"dry run: the card that would be uploaded is invalid: {problems}")
    _replace_file(dry_run_dir / DRY_RUN_PLAN, json.dumps(plan, indent=2) + "\n")
    logger.info("Dry run: %d files for %s written to %s", len(files), plan["repo_id"], repo)
    return plan


def push_folder(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload vanilla-transformer model",
    api=None,
    dry_run_dir: str | Path | None = None,
    prepare: bool = False,
    card_overrides: Mapping | None = None,
) -> dict:
    """Upload a model folder (see `save_hub_folder`) in one commit, from a staged copy.

    The folder is never written and nothing outside it is read: its model files are copied
    (`readable_model_files`: symlinks leaving the folder refused) into a new temporary staging
    folder; with `prepare` the staged copy gets the current remote code and a card for `repo_id`
    (`prepare_model_folder`, card values from the folder's card_info.json and `card_overrides`).
    The staged copy is checked (`check_hub_folder`), scanned for tokens, and uploaded: one
    `api.create_repo(repo_id=..., repo_type="model", private=..., exist_ok=True)` and one
    `api.upload_folder(repo_id=..., folder_path=<staging>, repo_type="model", commit_message=...,
    allow_patterns=ALLOWED_FILES, ignore_patterns=IGNORE_PATTERNS)`. `private` only applies when
    the repo is created. A huggingface_hub cache snapshot publishes like any folder.

    Args:
        token: an access token; default: huggingface_hub's (`HF_TOKEN`, or `hf auth login`).
            Never logged or written anywhere.
        api: an object with `create_repo` and `upload_folder` (default `HfApi(token=token)`); a
            test double captures the calls without network.
        dry_run_dir: send nothing; write the files that would be uploaded to
            `dry_run_dir/repo/` and the calls and file list (size, sha256) to
            `dry_run_dir/upload_plan.json`, and validate the copied card with `ModelCard.load`.
            It may not overlap `folder` or lie in a Hub cache.

    Returns:
        The plan: `repo_id`, `private`, `commit_message`, `calls` (method + arguments), `files`,
        `changes` (what `prepare` changed in the staged copy); after an upload also `repo_url`
        and `commit_url`. User errors raise `UserError`.
    """
    folder = Path(folder)
    _check_repo_id(repo_id)
    if dry_run_dir is not None:
        dry_run_dir = _check_output_dir(Path(dry_run_dir), folder)
    elif api is None:
        _check_token_available(token)
    sources = readable_model_files(folder)
    with tempfile.TemporaryDirectory(prefix="vanilla-transformer-push-") as tmp:
        staging = Path(tmp) / DRY_RUN_FILES
        _stage(sources, staging)
        changes = []
        if prepare:
            changes = prepare_model_folder(staging, repo_id, card_overrides, shown_as=folder)
        (staging / CARD_INFO_FILE).unlink(missing_ok=True)  # read for the card, never uploaded
        plan = {
            "repo_id": repo_id,
            "private": private,
            "commit_message": commit_message,
            "changes": changes,
        }
        return _upload_staged(staging, folder, plan, token, api, dry_run_dir)


def _upload_staged(staging: Path, folder: Path, plan: dict, token, api, dry_run_dir) -> dict:
    """Check, scan and upload the staged copy (or write the dry run); `plan` gains the calls."""
    problems = check_hub_folder(staging)
    if problems:
        raise UserError(f"{folder} is not ready to upload: {'; '.join(problems)}.")
    files = upload_file_list(staging)
    _check_no_token(staging, files, token, shown_as=folder)
    repo_id = plan["repo_id"]
    create_kwargs = {
        "repo_id": repo_id,
        "repo_type": "model",
        "private": plan["private"],
        "exist_ok": True,
    }
    upload_kwargs = {
        "repo_id": repo_id,
        "folder_path": str(staging),
        "repo_type": "model",
        "commit_message": plan["commit_message"],
        "allow_patterns": list(ALLOWED_FILES),
        "ignore_patterns": list(IGNORE_PATTERNS),
    }
    plan["calls"] = [
        {"method": "create_repo", "kwargs": create_kwargs},
        {"method": "upload_folder", "kwargs": upload_kwargs},
    ]
    plan["files"] = files
    if dry_run_dir is not None:
        return _write_dry_run(staging, files, dry_run_dir, plan)
    api = api if api is not None else HfApi(token=token)
    logger.info("Uploading %d files from %s to %s", len(files), folder, repo_id)
    repo_url = api.create_repo(**create_kwargs)
    commit = api.upload_folder(**upload_kwargs)
    plan["repo_url"] = str(repo_url) if repo_url is not None else None
    plan["commit_url"] = getattr(commit, "commit_url", None)
    logger.info("Uploaded to %s", plan["repo_url"] or repo_id)
    return plan
