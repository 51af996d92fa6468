#!/usr/bin/env bash
# The main job, offline on CPU: set up, build the Bible EN->ES corpus and a 4k BPE tokenizer
# (both cached), train the `cpu-small` recipe for 5,500 updates (the same model on every machine:
# about 20 minutes on the reference machine, longer on a slower one), average the last 5 checkpoints,
# score validation and test (beam 4, sacrebleu BLEU/chrF), write the Hub-layout folder, and
# translate a few sentences through `pipeline("translation", trust_remote_code=True)`.
#
# Usage: bash scripts/main.sh [extra scripts/train.py flags]
#   MAX_STEPS=5500       updates to train (the cpu-small preset's bound)
#   TRAIN_MINUTES=       optionally also stop after this many minutes of training (then the model
#                        depends on the machine's speed; evaluation and export come on top)
#   RUN_DIR=runs/cpu-small   where checkpoints, logs, summary.json and the Hub folder go
#   DATA_DIR=data_cache  corpus and tokenizer cache
#   VENV=.venv           the environment scripts/setup.sh creates (or reuses)
#   SKIP_SETUP=1         do not run scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=${VENV:-.venv}
MAX_STEPS=${MAX_STEPS:-5500}
TRAIN_MINUTES=${TRAIN_MINUTES:-0}
RUN_DIR=${RUN_DIR:-runs/cpu-small}
DATA_DIR=${DATA_DIR:-data_cache}
TOKENIZER=$DATA_DIR/tokenizer-bpe4k
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)

if [ -z "${SKIP_SETUP:-}" ]; then
    bash scripts/setup.sh
fi
PY="$VENV/bin/python"

echo "== corpus (cached in $DATA_DIR/bible)"
"$PY" scripts/build_corpus.py --cache_dir "$DATA_DIR/bible" --samples 1
if [ ! -f "$TOKENIZER/tokenizer.json" ]; then
    echo "== tokenizer: 4000-token joint byte-level BPE"
    "$PY" scripts/train_tokenizer.py --cache_dir "$DATA_DIR/bible" --vocab_size 4000 \
        --model_max_length 256 --output_dir "$TOKENIZER"
fi

echo "== training cpu-small for $MAX_STEPS updates"
"$PY" scripts/train.py --preset cpu-small --bible_cache_dir "$DATA_DIR/bible" \
    --tokenizer "$TOKENIZER" --output_dir "$RUN_DIR" --max_steps "$MAX_STEPS" --max_train_minutes "$TRAIN_MINUTES" \
    --overwrite_output_dir --average_last 5 --final_eval_splits validation,test \
    --hub_folder "$RUN_DIR/hub" "$@"

echo "== translation pipeline from the Hub folder (remote code)"
"$PY" - "$RUN_DIR/hub" <<'PYEOF'
import sys

from transformers import pipeline

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
echo "   checkpoints:  $RUN_DIR/checkpoints (the last 5, averaged)"
echo "   summary:      $RUN_DIR/summary.json   tensorboard: $RUN_DIR (if installed)"
echo "   Hub folder:   $RUN_DIR/hub (README.md model card, weights, code, tokenizer)"
echo "   wall time:    $(( ($(date +%s) - start) / 60 )) min"
