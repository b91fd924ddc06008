"""Run every downstream task of docs/METHOD.md on a pretrained PLACE folder and write one results table.

    python examples/evaluate.py --model place-tiny                 # full protocol, ~20 min on 2 CPUs (tiny preset)
    python examples/evaluate.py --model place-tiny --quick         # smoke test: tiny splits, one epoch
    python examples/evaluate.py --model place-tiny --budget light  # the ablation study's budget, ~13 min
    python examples/evaluate.py --model place-tiny --random_init   # the baseline: same architecture, random weights

The protocol is library code: `modeling_place.evaluation.protocols.suite` (run it, or import its `run`).
"""

from modeling_place.evaluation.protocols.suite import main

if __name__ == "__main__":
    main()
