"""Phrase grounding by the field's protocol (CNR, mIoU sweep, pointing game, pixel AUROC) against its baselines.

    python examples/evaluate_grounding.py --model place-cxr
    python examples/evaluate_grounding.py --model p0 p1 p2 --ita_only i0 i1 i2 --output_json docs/results/grounding.json

The protocol is library code: `modeling_place.evaluation.protocols.grounding` (run it, or import its `run`).
"""

from modeling_place.evaluation.protocols.grounding import main

if __name__ == "__main__":
    main()
