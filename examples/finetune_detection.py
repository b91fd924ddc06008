"""Object detection on the synthetic benchmark: a dense box head on the frozen ViT patch grid.

    python examples/finetune_detection.py --model place-tiny --task opacity
    python examples/finetune_detection.py --model place-tiny --trunk_layers 0   # evaluate.py's encoder comparison

The protocol is library code: `modeling_place.evaluation.protocols.detection` (run it, or import its `run`).
"""

from modeling_place.evaluation.protocols.detection import main

if __name__ == "__main__":
    main()
