"""`modeling_place.data`: the data side of PLACE, separate from what ships with a model.

Readers of the real datasets in their official layouts (`readers_*.py`, one entry point: `readers_place.load_dataset_by_name`),
label maps (`labels_place`), `place-prepare` (`prepare`) and the synthetic benchmark (`synthetic_cxr`, `place-synth`;
docs/BENCHMARK.md). Nothing here is imported by `import modeling_place`.
"""
