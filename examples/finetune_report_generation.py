"""Report generation on the synthetic benchmark: a transformer decoder over patch tokens and V-PORs.

    python examples/finetune_report_generation.py --model place-tiny --num_beams 3

The protocol is library code: `modeling_place.evaluation.protocols.report_generation` (run it, or import its `run`).
"""

from modeling_place.evaluation.protocols.report_generation import main

if __name__ == "__main__":
    main()
