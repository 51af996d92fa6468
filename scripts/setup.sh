#!/usr/bin/env bash
# Set up a virtual environment with CPU torch and this package (editable, with dev extras), on the
# NEWEST releases of every dependency that pyproject.toml allows: an existing venv is upgraded, never
# reused as it is (a stale venv once hid a breaking transformers release).
# Usage: bash scripts/setup.sh
#   VENV=path      where the environment lives (default: .venv in the repository)
#   TORCH_SPEC=... the torch requirement installed first (default: torch==2.13.0, which this
#                  project's machines take as a CPU build from local disk; elsewhere add
#                  TORCH_INDEX=https://download.pytorch.org/whl/cpu to avoid a multi-GB CUDA build)
#   CONSTRAINTS=f  a pip constraints file pinning the other dependencies (the floors run uses
#                  constraints/floors.txt); without it every dependency is upgraded to its newest
#   EXTRAS=dev     the optional dependency groups to install
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-dev}
PIP_QUIET=(-q --disable-pip-version-check)

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# torch first: a plain `torch` requirement with no torch installed would pull a CUDA build.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if [ -n "${TORCH_INDEX:-}" ]; then
        "$VENV/bin/pip" install "${PIP_QUIET[@]}" "$TORCH_SPEC" --index-url "$TORCH_INDEX"
    else
        # grep drops the index's harmless "Location ... is ignored" lines; pip's status decides.
        if ! "$VENV/bin/pip" install "${PIP_QUIET[@]}" "$TORCH_SPEC" 2>&1 \
            | { grep -v "^WARNING: Location" || true; }; then
            echo "error: pip could not install $TORCH_SPEC (above); set TORCH_SPEC to one it can." >&2
            exit 1
        fi
    fi
fi
# Keep the installed torch while everything else moves to its newest allowed release.
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
# (read from the metadata: importing torch before numpy is installed prints a warning)
"$VENV/bin/python" -c "import importlib.metadata as md; print('torch==' + md.version('torch').split('+')[0])" > "$pins"
if [ -n "${CONSTRAINTS:-}" ]; then
    cat "$CONSTRAINTS" >> "$pins"
    strategy=(--upgrade)
else
    strategy=(--upgrade --upgrade-strategy eager)
fi
"$VENV/bin/pip" install "${PIP_QUIET[@]}" "${strategy[@]}" -c "$pins" -e ".[$EXTRAS]" 2>&1 \
    | grep -v "^WARNING: Location" || true
"$VENV/bin/python" - <<'PYEOF'
import importlib.metadata as md

import vanilla_transformer

names = ["torch", "transformers", "accelerate", "datasets", "huggingface_hub", "tokenizers"]
print("vanilla_transformer", vanilla_transformer.__version__, "|",
      " | ".join(f"{n} {md.version(n)}" for n in names))
PYEOF

# The Bible EN-ES corpus (the offline default) is read from Debian's SWORD modules.
if ! command -v diatheke >/dev/null 2>&1 || [ ! -d /usr/share/sword/modules/texts/ztext/spaRV1909eb ] || [ ! -d /usr/share/sword/modules/texts/ztext/engKJV2006eb ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && apt-get install -y -qq diatheke sword-text-kjv sword-text-web sword-text-sparv) >/dev/null 2>&1 \
            || echo "warning: could not apt-get install diatheke sword-text-kjv sword-text-web sword-text-sparv"
    else
        echo "note: the Bible corpus needs: sudo apt-get install -y diatheke sword-text-kjv sword-text-web sword-text-sparv"
    fi
fi

# The demo's browser test drives Debian's Chromium (a browser cannot be downloaded at run time).
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
            || echo "warning: could not apt-get install chromium (the demo's browser tests will skip)"
    else
        echo "note: the demo's browser tests need: sudo apt-get install -y chromium"
    fi
fi
