"""Upload a Hub folder (written by `vanilla_transformer.publishing.hub.save_hub_folder`) to the Hugging Face
Hub in one commit: `create_repo(exist_ok=True)` then one `upload_folder`. The folder's README.md
(the model card) is uploaded as is; `push_to_hub` is not used because it replaces the card.

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
are refused.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    options, positional = parse_cli(
        [PushOptions],
        argv,
        __doc__,
        extra_arguments=[
            ("folder", {"help": "The Hub folder to upload (from save_hub_folder)."}),
            ("repo_id", {"help": "Target model repo, 'owner/name'."}),
        ],
    )
    return argparse.Namespace(**vars(options), **vars(positional))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    plan = push_folder(
        args.folder,
        args.repo_id,
        private=args.private,
        commit_message=args.commit_message,
        dry_run_dir=args.dry_run,
    )
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
