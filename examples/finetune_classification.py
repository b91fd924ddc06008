"""Classification on the synthetic benchmark: linear probe on the frozen PLACE encoder (or a full fine-tune).

    python examples/finetune_classification.py --model place-tiny                       # 1 %, 10 %, 100 % probes
    python examples/finetune_classification.py --model place-tiny --full_finetune --fractions 0.1

The protocol is library code: `modeling_place.evaluation.protocols.classification` (run it, or import its `run`).
"""

from modeling_place.evaluation.protocols.classification import main

if __name__ == "__main__":
    main()
