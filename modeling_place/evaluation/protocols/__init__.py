"""The downstream protocols, one module per task, each with `parser()`, `run(settings)` and `main(argv)`.

`suite` runs them all and writes one table (`examples/evaluate.py`); the `examples/finetune_*.py`,
`examples/zero_shot.py` and `examples/evaluate_retrieval.py` scripts are their command lines.
"""
