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

import json
import sys

from vanilla_transformer.errors import console_tool
from vanilla_transformer.recipe.finetuning import FinetuneConfig, finetune
from vanilla_transformer.recipe.options import parse_cli


def parse_args(argv: list[str] | None = None) -> FinetuneConfig:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--model", *argv]  # the model may come first, without its flag
    (config,) = parse_cli([FinetuneConfig], argv, __doc__)
    return config


@console_tool
def main(argv: list[str]) -> int:
    config = parse_args(argv)
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
