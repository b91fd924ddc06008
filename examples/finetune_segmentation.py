"""Semantic segmentation on the synthetic benchmark: a decoder over multi-level frozen ViT features.

    python examples/finetune_segmentation.py --model place-tiny --task pneumothorax

The protocol is library code: `modeling_place.evaluation.protocols.segmentation` (run it, or import its `run`).
"""

from modeling_place.evaluation.protocols.segmentation import main

if __name__ == "__main__":
    main()
