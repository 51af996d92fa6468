#!/usr/bin/env bash
# The main job, offline on CPU: set up, then `scripts/train.py --preset cpu-small`, which builds the
# Bible EN->ES corpus and a 4k BPE tokenizer (both cached in data_cache/), trains the `cpu-small`
# recipe for 5,500 updates (the same model on every machine: about 20 minutes on the reference
# machine, longer on a slower one), averages the last 5 checkpoints past the warm-up, scores
# validation and test (beam 4, sacrebleu BLEU/chrF), and writes the Hub-layout folder
# runs/cpu-small/hub; then translates a few sentences through
# `pipeline("translation", trust_remote_code=True)`. Every setting is the preset's
# (vanilla_transformer/recipe/training.py, PRESETS["cpu-small"]); this script only starts afresh
# (--overwrite_output_dir) and passes the overrides below.
#
# Usage: bash scripts/main.sh [extra scripts/train.py flags]
#   MAX_STEPS=           updates to train (default: the preset's 5,500)
#   TRAIN_MINUTES=       optionally also stop after this many minutes of training (then the model
#                        depends on the machine's speed; evaluation and export come on top)
#   RUN_DIR=runs/cpu-small   where checkpoints, logs, summary.json and the Hub folder go
#   VENV=.venv           the environment scripts/setup.sh creates (or reuses)
#   SKIP_SETUP=1         do not run scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=${VENV:-.venv}
RUN_DIR=${RUN_DIR:-runs/cpu-small}  # the preset's run folder unless set
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)

if [ -z "${SKIP_SETUP:-}" ]; then
    bash scripts/setup.sh
fi
PY="$VENV/bin/python"

overrides=()
if [ -n "${MAX_STEPS:-}" ]; then overrides+=(--max_steps "$MAX_STEPS"); fi
if [ -n "${TRAIN_MINUTES:-}" ]; then overrides+=(--max_train_minutes "$TRAIN_MINUTES"); fi
if [ "$RUN_DIR" != runs/cpu-small ]; then overrides+=(--output_dir "$RUN_DIR"); fi
echo "== training the cpu-small preset into $RUN_DIR ${overrides[*]:-}"
"$PY" scripts/train.py --preset cpu-small --overwrite_output_dir ${overrides[@]+"${overrides[@]}"} "$@"

echo "== translation pipeline from the Hub folder (remote code)"
"$PY" - "$RUN_DIR/hub" <<'PYEOF'
import logging
import sys

# transformers imports torchao where it is installed (the dev extras install it), which logs four
# harmless lines about kernels for another Python; the package's tools filter them the same way.
for name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(name).setLevel(logging.ERROR)

from transformers import pipeline  # noqa: E402

translator = pipeline("translation", model=sys.argv[1], trust_remote_code=True)
sentences = [
    "In the beginning God created the heaven and the earth.",
    "And the LORD spake unto Moses, saying,",
    "Blessed are the poor in spirit: for theirs is the kingdom of heaven.",
    "The king sent his servants to the city.",
]
for source, out in zip(sentences, translator(sentences), strict=True):
    print(f"  {source}\n    -> {out['translation_text']}")
PYEOF

"$PY" - "$RUN_DIR" <<'PYEOF'
import json
import sys

s = json.load(open(f"{sys.argv[1]}/summary.json"))
print(f"== done: {s['steps']} updates, {s['tokens']:,} tokens, {s['train_seconds'] / 60:.1f} min "
      f"of training on {s['hardware']}; {s['num_parameters']:,} parameters")
for split, r in s["scores"].items():
    print(f"   {split:10s} BLEU {r['bleu']:5.2f}  chrF {r['chrf']:5.2f}  ({r['num_samples']} verses, "
          f"beam 4)  {r['bleu_signature']}")
PYEOF
echo "   checkpoints:  $RUN_DIR/checkpoints (the last 5; summary.json's averaging_check: kept or not)"
echo "   summary:      $RUN_DIR/summary.json   tensorboard: $RUN_DIR (if installed)"
echo "   Hub folder:   $RUN_DIR/hub (README.md model card, weights, code, tokenizer)"
echo "   wall time:    $(( ($(date +%s) - start) / 60 )) min"
