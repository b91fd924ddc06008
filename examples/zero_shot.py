"""Zero-shot classification with a pretrained PLACE model: prompts instead of training.

    python examples/zero_shot.py --model place-tiny

The protocol is library code: `modeling_place.evaluation.protocols.zero_shot` (run it, or import its `run`).
"""

from modeling_place.evaluation.protocols.zero_shot import main

if __name__ == "__main__":
    main()
