"""Fine-tuning a saved model on another translation dataset, the Hugging Face-native way:
`Seq2SeqTrainer` + `DataCollatorForSeq2Seq(tokenizer, model=model)`.

The collator pads `labels` with -100 (ignored by the loss) and builds `decoder_input_ids` with the
model's `prepare_decoder_input_ids_from_labels` (labels shifted right behind `<s>`). Evaluation
generates (`predict_with_generate=True`) and scores detokenised output with sacrebleu
(`compute_metrics`: BLEU and chrF). Label smoothing 0.1 is the paper's (Section 5.4).

This path is for users who know `Trainer`; the project's own training loop is
`vanilla_transformer.recipe.training` (Accelerate, token-budget batches).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)

from ..publishing.hub import read_card_info, write_card_info
from .checkpoints import resolve_model_folder, tied_weights
from .data import tokenize_translation_dataset
from .evaluation import compute_bleu
from .options import CorpusOptions, option

logger = logging.getLogger(__name__)

__all__ = ["FinetuneConfig", "GenerationKeepingTrainer", "make_compute_metrics", "finetune"]


# FinetuneConfig fields that are `Seq2SeqTrainingArguments` fields of the same name and meaning.
TRAINING_ARGUMENTS = tuple(
    """output_dir learning_rate lr_scheduler_type warmup_steps weight_decay adam_beta2 adam_epsilon
    label_smoothing_factor num_train_epochs max_steps per_device_train_batch_size
    per_device_eval_batch_size gradient_accumulation_steps logging_steps seed report_to""".split()
)


@dataclass(kw_only=True)
class FinetuneConfig(CorpusOptions):
    """What `finetune` needs: the corpus (`CorpusOptions`) and the Trainer's settings; the
    `vanilla-transformer-finetune` tool exposes every field as a flag."""

    model: str = field(
        metadata={
            "help": "save_pretrained folder (or Hub id) of the model to fine-tune, with its tokenizer."
        }
    )
    output_dir: str = field(
        metadata={"help": "Where Trainer checkpoints and the final model (OUTPUT_DIR/final) go."}
    )
    train_split: str = option("train", "Split to train on.")
    eval_split: str | None = option(
        "validation", "Split to evaluate on (BLEU/chrF with generation); 'none' to skip."
    )
    max_train_samples: int | None = option(None, "Use only the first N training pairs.")
    max_eval_samples: int | None = option(None, "Use only the first N evaluation pairs.")
    max_source_length: int = option(256, "Drop pairs whose source is longer (tokens, with </s>).")
    max_target_length: int = option(256, "Drop pairs whose target is longer (tokens, with </s>).")
    learning_rate: float = option(1e-4, "Peak learning rate.")
    lr_scheduler_type: str = option(
        "inverse_sqrt", "transformers scheduler name (inverse_sqrt is the paper's decay)."
    )  # the paper's schedule after warm-up (Section 5.3)
    warmup_steps: int = option(100, "Linear warm-up updates.")
    weight_decay: float = option(0.0, "AdamW weight decay (the paper uses none).")
    adam_beta2: float = option(
        0.98, "Adam beta2 (paper: 0.98)."
    )  # Section 5.3: beta1 0.9, beta2 0.98, eps 1e-9
    adam_epsilon: float = option(1e-9, "Adam epsilon (paper: 1e-9).")
    label_smoothing_factor: float = option(
        0.1, "Label smoothing epsilon_ls (paper: 0.1)."
    )  # Section 5.4
    num_train_epochs: float = option(3.0, "Epochs (ignored when --max_steps > 0).")
    max_steps: int = option(-1, "Total updates; > 0 overrides --num_train_epochs.")
    per_device_train_batch_size: int = option(32, "Training pairs per batch.")
    per_device_eval_batch_size: int = option(32, "Evaluation pairs per generate batch.")
    gradient_accumulation_steps: int = option(1, "Batches per update.")
    num_beams: int = option(4, "Beam size for evaluation (paper: 4).")
    length_penalty: float = option(0.6, "Length penalty for evaluation (paper: 0.6).")
    logging_steps: int = option(50, "Log the training loss every N updates.")
    eval_steps: int | None = option(
        None, "Evaluate and save every N updates (default: once per epoch)."
    )
    save_total_limit: int | None = option(2, "Keep at most N Trainer checkpoints.")
    seed: int = option(0, "Random seed.")
    report_to: str = option(
        "none", "Trainer integrations to report to (e.g. tensorboard); 'none' for none."
    )

    def __post_init__(self):
        if self.eval_split is not None and self.eval_split.lower() in ("none", "null", ""):
            self.eval_split = None


def make_compute_metrics(tokenizer):
    """`compute_metrics` for `Seq2SeqTrainer(predict_with_generate=True)`: detokenised BLEU and
    chrF and TER through the packaged `evaluate` modules. Both predictions and labels may hold -100 (padding added across batches by Trainer).
    The sacrebleu signatures of the last call are kept in `compute_metrics.signatures`."""
    pad = tokenizer.pad_token_id

    def compute_metrics(eval_preds) -> dict[str, float]:
        predictions, labels = eval_preds
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        predictions = np.where(predictions < 0, pad, predictions)
        labels = np.where(labels < 0, pad, labels)
        hypotheses = tokenizer.batch_decode(predictions, skip_special_tokens=True)
        references = tokenizer.batch_decode(labels, skip_special_tokens=True)
        scores = compute_bleu([h.strip() for h in hypotheses], [r.strip() for r in references])
        # Trainer logs numbers only; the signatures are kept aside.
        compute_metrics.signatures = {k: v for k, v in scores.items() if k.endswith("signature")}
        return {"bleu": scores["bleu"], "chrf": scores["chrf"], "ter": scores["ter"]}

    compute_metrics.signatures = {}
    return compute_metrics


class GenerationKeepingTrainer(Seq2SeqTrainer):
    """`Seq2SeqTrainer` that evaluates with the model's own generation settings, and keeps them.

    `Seq2SeqTrainer.prediction_step` writes every transformers default into
    `model.generation_config` after its first `generate` (among them `max_length=20`). The next
    evaluation would then cut hypotheses at 20 tokens instead of the paper's input length + 50
    (the model's default), and every checkpoint saved after it would carry that limit, so the BLEU
    that `load_best_model_at_end` compares would not be the evaluate tool's (issue 19.1). The
    model's generation config is put back after each prediction step."""

    def prediction_step(self, *args, **kwargs):
        kept = copy.deepcopy(self.model.generation_config)
        try:
            return super().prediction_step(*args, **kwargs)
        finally:
            self.model.generation_config = kept


def _first(dataset, n: int | None):
    return dataset if n is None else dataset.select(range(min(n, len(dataset))))


def finetuned_card_info(config, base_folder, tokenized, trainer, metrics, signatures) -> dict:
    """Card values of a fine-tuned model (`card_info.json` beside it, read by the push tool): the
    base model, the data, the updates, and the evaluation split's scores when there is one."""
    base = read_card_info(base_folder)
    # base_model must be a Hub id: the base's own repo when it was published, else what was given.
    base_model = base.get("repo_id") if Path(config.model).is_dir() else config.model
    if base_model and base_model.startswith("your-name/"):  # a base that was never published
        base_model = None
    info = {
        "src_lang": config.src_lang,
        "tgt_lang": config.tgt_lang,
        "base_model": base_model,
        "dataset_name": config.dataset,
        "dataset_id": Path(config.dataset).name or config.dataset,
        "dataset_description": f"Parallel corpus loaded from `{config.dataset}` "
        f"(split {config.train_split!r}).",
        "train_samples": len(tokenized["train"]),
        "train_steps": trainer.state.global_step,
        "train_tokens": int(sum(map(len, tokenized["train"]["input_ids"])))
        + int(sum(map(len, tokenized["train"]["labels"]))),
        "hyperparameters": {
            k: getattr(config, k)
            for k in ("learning_rate", "lr_scheduler_type", "warmup_steps", "num_train_epochs")
        },
        "hardware": (
            torch.cuda.get_device_name()
            if torch.cuda.is_available()
            else f"CPU, {os.cpu_count()} cores"
        ),
        "intended_use": base.get("intended_use"),
        "limitations": base.get("limitations"),
        "example_source": base.get("example_source"),
        "training_time": sum(
            r.get("train_runtime", 0) for r in trainer.state.log_history if "train_runtime" in r
        )
        or None,
    }
    if metrics is not None:
        info.update(
            eval_split=config.eval_split,
            test_bleu=metrics["eval_bleu"],
            test_chrf=metrics["eval_chrf"],
            test_samples=len(tokenized["eval"]),
            bleu_signature=signatures.get("bleu_signature"),
            chrf_signature=signatures.get("chrf_signature"),
            num_beams=config.num_beams,
            length_penalty=config.length_penalty,
        )
    return {k: v for k, v in info.items() if v is not None}


def tokenize_splits(config: FinetuneConfig, tokenizer) -> dict:
    """{"train": ..., "eval": ...} tokenised (the first max_*_samples pairs; "eval" only with an
    eval split); an empty split after the length filters is refused, saying what removed what."""
    corpus = config.load()
    splits = {"train": _first(config.split(corpus, config.train_split), config.max_train_samples)}
    if config.eval_split:
        splits["eval"] = _first(config.split(corpus, config.eval_split), config.max_eval_samples)
    tokenized = {}
    for name, split in splits.items():
        tokenized[name], counts = tokenize_translation_dataset(
            split,
            tokenizer,
            config.src_lang,
            config.tgt_lang,
            config.max_source_length,
            config.max_target_length,
        )
        logger.info("%s split: %s", name, counts["train"])  # counts name the one split "train"
        if counts["train"]["kept"] == 0:  # the Trainer would fail on a missing column, or spin
            c = counts["train"]
            raise ValueError(
                f"the {name} split is empty after filtering: {c['before']} pairs, "
                f"{c['source_too_long']} with a source longer than max_source_length="
                f"{config.max_source_length}, {c['target_too_long']} with a target longer than "
                f"max_target_length={config.max_target_length}."
            )
    return tokenized


def training_arguments(config: FinetuneConfig, evaluate: bool) -> Seq2SeqTrainingArguments:
    """The Trainer's arguments: the config's own (`TRAINING_ARGUMENTS`), generation during
    evaluation, a checkpoint per evaluation and the best one (by BLEU) loaded at the end."""
    return Seq2SeqTrainingArguments(
        **{name: getattr(config, name) for name in TRAINING_ARGUMENTS},
        predict_with_generate=True,
        generation_num_beams=config.num_beams,
        eval_strategy=("steps" if config.eval_steps else "epoch") if evaluate else "no",
        eval_steps=config.eval_steps,
        save_strategy=("steps" if config.eval_steps else "epoch") if evaluate else "epoch",
        save_steps=config.eval_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=evaluate,
        metric_for_best_model="bleu" if evaluate else None,
        greater_is_better=True,
        # Batches of similar lengths, as in the paper (Section 5.1).
        train_sampling_strategy="group_by_length",
        # Pinned memory only helps copies to a GPU; on CPU torch warns that it is ignored.
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def finetune(config: FinetuneConfig) -> dict:
    """Fine-tune `config.model` and save the result (model, tokenizer, remote code) to
    `config.output_dir/final`. Returns `{"log_history": [...], "eval": {...} or None,
    "final_dir": str, "bleu_signature": str | None, "chrf_signature": str | None}`."""
    base_folder = resolve_model_folder(config.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(base_folder)
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    # Trainer reloads its best checkpoint with load_state_dict: the tied aliases (lm_head.weight,
    # stored once as model.shared.weight) are missing there by design. Declared here, Trainer ties
    # them again instead of warning "There were missing keys in the checkpoint model loaded".
    model._keys_to_ignore_on_save = list(tied_weights(model))
    # Trainer's evaluation generates with `generation_num_beams` over the model's generation
    # config; the saved generation config keeps its beam settings (a config with num_beams=1 and a
    # length penalty is refused by save_pretrained).
    if config.num_beams > 1:
        model.generation_config.length_penalty = config.length_penalty

    tokenized = tokenize_splits(config, tokenizer)
    evaluate = "eval" in tokenized
    compute_metrics = make_compute_metrics(tokenizer)
    args = training_arguments(config, evaluate)
    trainer = GenerationKeepingTrainer(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized.get("eval"),
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    trainer.train()
    metrics = trainer.evaluate() if evaluate else None
    final_dir = Path(config.output_dir) / "final"
    # model.save_pretrained (weights, config, remote code, pipeline file) and the tokenizer.
    trainer.save_model(str(final_dir))
    signatures = compute_metrics.signatures
    write_card_info(
        final_dir,
        finetuned_card_info(config, base_folder, tokenized, trainer, metrics, signatures),
    )
    if metrics is not None:
        logger.info(
            "eval BLEU %.2f chrF %.2f (%s; %s)",
            metrics["eval_bleu"],
            metrics["eval_chrf"],
            signatures.get("bleu_signature"),
            signatures.get("chrf_signature"),
        )
    return {
        "log_history": trainer.state.log_history,
        "eval": metrics,
        "final_dir": str(final_dir),
        "bleu_signature": signatures.get("bleu_signature"),
        "chrf_signature": signatures.get("chrf_signature"),
    }
