"""Publish any model folder (the final model of a run, an averaged or a fine-tuned model) to the
Hugging Face Hub in one commit: `create_repo(exist_ok=True)` then one `upload_folder`.

The folder itself is never changed: its model files are copied into a staging folder (in a dry
run, DIR/repo/), and the staged copy is made current, each change printed:
- its remote code (configuration_/modeling_/pipeline_vanilla_transformer.py) is replaced by the
  installed package's copies: checkpoints saved by earlier releases carry a modeling file that
  silently decodes wrongly on transformers >= 5.24;
- its card (README.md) is written or refreshed from the values kept in card_info.json (written by
  training, averaging and fine-tuning; --card_info adds or overrides values), with REPO_ID in the
  usage code. A model without test scores gets a card that says "Not evaluated".
Only model files are uploaded (an allow-list: weights, configs, tokenizer, remote code, card; never
pickles such as training_args.bin), and every one is scanned for an access token. Nothing outside
the folder is read: a symlink to a file outside it is refused (a huggingface_hub cache snapshot is
read from its cache, which is never written). See docs/reliability.md, "Publishing safety".

Authentication (never pass a token on the command line, where shells and logs keep it):
    hf auth login                   # once; stores a token with write access locally
    # or, for CI:  export HF_TOKEN=hf_...   (from a secret store)
    python scripts/push_to_hub.py runs/base/hub your-name/vanilla-transformer-bible-en-es

Check first, without network or token:
    python scripts/push_to_hub.py runs/base/hub your-name/vanilla-transformer-bible-en-es \\
        --dry_run /tmp/push_preview
writes the exact files that would be uploaded to /tmp/push_preview/repo/ and the calls and file
list (sizes, sha256) to /tmp/push_preview/upload_plan.json, and validates the card.

The folder is checked before anything is sent: weights, config with auto_map and the
`translation` custom pipeline, tokenizer, remote code, and a card whose metadata has
`pipeline_tag: translation` and a model-index with BLEU and chrF. Files containing an access token
are refused. Errors are one or two lines; --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from vanilla_transformer.errors import UserError, console_tool
from vanilla_transformer.publishing.hub import push_folder
from vanilla_transformer.recipe.options import option, parse_cli


@dataclass
class PushOptions:
    dry_run: str | None = option(
        None,
        "Upload nothing: write the files that would be uploaded to DIR/repo/ and the calls to "
        "DIR/upload_plan.json (needs no token or network).",
        metavar="DIR",
    )
    private: bool = option(
        False, "Create the repo private (only applies when the repo does not exist yet)."
    )
    commit_message: str = option(
        "Upload vanilla-transformer model", "Commit message of the upload."
    )
    card_info: str | None = option(
        None,
        "JSON file of card values that add to or override the folder's card_info.json (e.g. "
        "src_lang, dataset_name, intended_use, limitations).",
        metavar="FILE",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    options, positional = parse_cli(
        [PushOptions],
        argv,
        __doc__,
        extra_arguments=[
            ("folder", {"help": "The model folder to publish (Hub, averaged or fine-tuned)."}),
            ("repo_id", {"help": "Target model repo, 'owner/name'."}),
        ],
    )
    return argparse.Namespace(**vars(options), **vars(positional))


def read_card_overrides(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        values = json.loads(Path(path).read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"--card_info {path} is not valid JSON ({err}).") from None
    if not isinstance(values, dict):
        raise UserError(f"--card_info {path} must hold a JSON object of card values.")
    return values


@console_tool
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    plan = push_folder(
        args.folder,
        args.repo_id,
        private=args.private,
        commit_message=args.commit_message,
        dry_run_dir=args.dry_run,
        prepare=True,
        card_overrides=read_card_overrides(args.card_info),
    )
    if plan["changes"]:
        staged = f"{args.dry_run}/repo" if args.dry_run else "the uploaded copy"
        print(f"{args.folder} is left as it is; in {staged}:")
        for change in plan["changes"]:
            print(f"  {change}")
    files = plan["files"]
    if args.dry_run:
        print(
            f"dry run: {len(files)} files for {args.repo_id} in {args.dry_run}/repo "
            f"(plan: {args.dry_run}/upload_plan.json)"
        )
        for entry in files:
            print(f"  {entry['path']}  {entry['size']:,} bytes")
    else:
        print(f"uploaded {len(files)} files to {plan.get('repo_url') or args.repo_id}")
        if plan.get("commit_url"):
            print(f"commit: {plan['commit_url']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
