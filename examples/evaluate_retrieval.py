"""Image-to-text retrieval (5x200 protocol) and sentence grounding with a pretrained PLACE model, no training.

    python examples/evaluate_retrieval.py --model place-tiny

The protocol is library code: `modeling_place.evaluation.protocols.retrieval` (run it, or import its `run`).
"""

from modeling_place.evaluation.protocols.retrieval import main

if __name__ == "__main__":
    main()
