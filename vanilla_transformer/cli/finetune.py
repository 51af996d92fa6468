"""Fine-tune a saved model on another translation dataset with transformers' Seq2SeqTrainer.

Examples:
    python scripts/finetune.py runs/base/final --dataset my_pairs.jsonl --output_dir runs/ft \\
        --src_lang en --tgt_lang es --eval_split none --max_steps 2000
    python scripts/finetune.py runs/kjv/final --dataset bible --english web --output_dir runs/web

The HF-native path: DataCollatorForSeq2Seq(tokenizer, model=model) (labels padded with -100,
decoder inputs from prepare_decoder_input_ids_from_labels), predict_with_generate, sacrebleu
BLEU/chrF in compute_metrics, label smoothing 0.1. The result (model, tokenizer, remote code) is
saved to OUTPUT_DIR/final; the Trainer's checkpoints are in OUTPUT_DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from vanilla_transformer.recipe.finetuning import FinetuneConfig, finetune

HELP = {
    "model": "save_pretrained folder (or Hub id) of the model to fine-tune, with its tokenizer.",
    "output_dir": "Where Trainer checkpoints and the final model (OUTPUT_DIR/final) go.",
    "dataset": "'bible' (offline Bible EN->ES) or a load_translation_dataset source: "
    "save_to_disk folder, JSONL/TSV file, folder of files, or Hub id.",
    "dataset_config": "Hub dataset config (e.g. 'de-en').",
    "english": "English side of the Bible corpus: kjv or web.",
    "bible_cache_dir": "Where the Bible corpus is built once and cached.",
    "src_lang": "Source language key of the 'translation' rows.",
    "tgt_lang": "Target language key of the 'translation' rows.",
    "train_split": "Split to train on.",
    "eval_split": "Split to evaluate on (BLEU/chrF with generation); 'none' to skip.",
    "max_train_samples": "Use only the first N training pairs.",
    "max_eval_samples": "Use only the first N evaluation pairs.",
    "max_source_length": "Drop pairs whose source is longer (tokens, with </s>).",
    "max_target_length": "Drop pairs whose target is longer (tokens, with </s>).",
    "learning_rate": "Peak learning rate.",
    "lr_scheduler_type": "transformers scheduler name (inverse_sqrt is the paper's decay).",
    "warmup_steps": "Linear warm-up updates.",
    "weight_decay": "AdamW weight decay (the paper uses none).",
    "adam_beta2": "Adam beta2 (paper: 0.98).",
    "adam_epsilon": "Adam epsilon (paper: 1e-9).",
    "label_smoothing_factor": "Label smoothing epsilon_ls (paper: 0.1).",
    "num_train_epochs": "Epochs (ignored when --max_steps > 0).",
    "max_steps": "Total updates; > 0 overrides --num_train_epochs.",
    "per_device_train_batch_size": "Training pairs per batch.",
    "per_device_eval_batch_size": "Evaluation pairs per generate batch.",
    "gradient_accumulation_steps": "Batches per update.",
    "num_beams": "Beam size for evaluation (paper: 4).",
    "length_penalty": "Length penalty for evaluation (paper: 0.6).",
    "logging_steps": "Log the training loss every N updates.",
    "eval_steps": "Evaluate and save every N updates (default: once per epoch).",
    "save_total_limit": "Keep at most N Trainer checkpoints.",
    "seed": "Random seed.",
    "report_to": "Trainer integrations to report to (e.g. tensorboard); 'none' for none.",
}


def _optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)

    return parse


def parse_args(argv: list[str] | None = None) -> FinetuneConfig:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for field in dataclasses.fields(FinetuneConfig):
        help_text = HELP[field.name]
        if field.default is dataclasses.MISSING:
            if field.name == "model":
                parser.add_argument("model", help=help_text)
            else:
                parser.add_argument(f"--{field.name}", required=True, help=help_text)
            continue
        kind = {"int": int, "float": float}.get(str(field.type).split(" ")[0], str)
        nullable = "None" in str(field.type)
        parser.add_argument(
            f"--{field.name}",
            type=_optional(kind) if nullable else kind,
            default=field.default,
            help=f"{help_text} Default: {field.default}.",
        )
    return FinetuneConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = finetune(config)
    losses = [entry["loss"] for entry in result["log_history"] if "loss" in entry]
    if losses:
        print(f"training loss: {losses[0]:.4f} (first log) -> {losses[-1]:.4f} (last log)")
    if result["eval"] is not None:
        print(f"eval BLEU {result['eval']['eval_bleu']:.2f}  ({result['bleu_signature']})")
        print(f"eval chrF {result['eval']['eval_chrf']:.2f}  ({result['chrf_signature']})")
    print(f"fine-tuned model: {result['final_dir']}")
    summary = {
        "losses": losses,
        "eval": result["eval"],
        "bleu_signature": result["bleu_signature"],
        "chrf_signature": result["chrf_signature"],
        "final_dir": result["final_dir"],
    }
    with open(f"{config.output_dir}/finetune_summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
