"""Publish a saved PLACE folder (pretrained model or downstream head) to the Hugging Face Hub.

    python3 examples/push_to_hub.py place-cxr --repo-id me/place-cxr --results runs/evaluate/results.json
    python3 examples/push_to_hub.py runs/downstream/classification-1 --repo-id me/place-cxr-cls --private \
        --revision v0.1 --base-model me/place-cxr --processor-from place-cxr \
        --results runs/downstream/classification.json

The repository gets the weights, the complete `auto_map` (AutoConfig, AutoModel or the head's
AutoModelFor<Task>, AutoProcessor / AutoImageProcessor), the custom-code modules (missing ones are copied from
the installed package), the processor files and a model card rendered from `model_cards/<variant>.md` with
the results file as its `model-index`. Each publication mirrors the folder in one commit; a second commit pins
the card's loading snippet to it. Authenticate with `HF_TOKEN` or `hf auth login`: the token is never printed.
"""

from __future__ import annotations

import argparse
import sys

from huggingface_hub.errors import HfHubHTTPError

from modeling_place.publishing import VARIANTS, publish


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a folder saved with save_pretrained (model + optional processor)")
    parser.add_argument("--repo-id", required=True, help="namespace/name of the Hub repository")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", default=None, help="branch to commit to (created from main if missing)")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--results", default=None, help="evaluation results JSON for the card's model-index")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default=None, help="default: from config.json")
    parser.add_argument("--base-model", default=None, help="Hub id of the model this one was trained from")
    parser.add_argument("--processor-from", default=None,
                        help="saved folder whose processor to ship when FOLDER has none (e.g. the pretrained model)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    """Publish as the command line says; print where to, and return the commit sha holding the files."""
    args = parse_args(argv)
    info = publish(
        args.folder, args.repo_id, private=args.private, revision=args.revision,
        commit_message=args.commit_message, results_path=args.results, variant=args.variant,
        base_model=args.base_model, processor_from=args.processor_from,
    )
    branch = args.revision or "main"
    print(f"Published {args.folder} to {info.repo_url} ({branch}) at commit {info.oid}")
    print(f"Load it with revision={info.oid!r} to pin exactly these files.")
    return info.oid


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError, HfHubHTTPError) as error:  # the message never holds the token
        sys.exit(f"push_to_hub: {error}")
