"""Pretrain PLACE.

    accelerate launch examples/pretrain.py                                  # tiny preset, synthetic data, ~15 min on 2 CPUs
    accelerate launch examples/pretrain.py examples/configs/base_mimic.yaml # paper scale: DeiT-B/16 + 6-layer Bio_ClinicalBERT on MIMIC-CXR
    accelerate launch examples/pretrain.py --model='{"lambda_pcma": 0, "lambda_ce": 0}' --output_dir=ita-only

    accelerate launch --config_file examples/accelerate/cpu_ddp.yaml examples/pretrain.py # 2 gloo ranks on a CPU machine

Configuration: TrainConfig defaults < an optional YAML/JSON file < `--key value` / `--key=value` overrides
(HfArgumentParser; `--help` lists them). The resolved configuration is printed first and saved with every
checkpoint. A killed run resumes from its last complete checkpoint in `run_dir` when started again with the
same command, and ends with the weights of an uninterrupted run. The result is a folder that
`AutoModel.from_pretrained(output_dir)` loads (and `trust_remote_code=True` without this package).
"""

import sys

from modeling_place.training import NonFiniteLossError, PlaceTrainer, build_model_and_processor, load_pair_splits, load_train_config

# -- 1. configuration --------------------------------------------------------------------------------------
config = load_train_config(sys.argv[1:])
print("PLACE pretraining configuration:\n" + str(config), flush=True)

# -- 2. data: the synthetic benchmark by default, or a real dataset by reader name -------------------------
splits = load_pair_splits(config)
print(f"data: {len(splits.train)} training pairs, "
      f"{0 if splits.validation is None else len(splits.validation)} validation pairs")

# -- 3. model + processor (tokenizer trained on the reports unless a local one is given; pretrained towers
#       are loaded after construction, never inside __init__) ----------------------------------------------
model, processor = build_model_and_processor(config, splits)
print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
      f"vocabulary {len(processor.tokenizer)}")

# -- 4. train (resumes from run_dir's newest checkpoint), then save model + processor + custom code ----------
trainer = PlaceTrainer(config, model, processor, splits)
try:
    summary = trainer.train()
except NonFiniteLossError as error:
    print(f"stopped: {error}", file=sys.stderr)
    sys.exit(1)
trainer.save_pretrained(config.output_dir, summary)
trainer.end()

start, end = summary["initial_validation"] or {}, summary["final_validation"] or {}
print(f"done: {summary['steps']} steps in {summary['seconds']:.0f} s ({summary['samples_per_s']:.1f} samples/s), "
      f"{summary['skipped_samples']} bad samples skipped, {summary['skipped_rows']} malformed table rows skipped")
if start and end:
    print(f"validation recall@1 {start['val_recall@1']:.3f} -> {end['val_recall@1']:.3f}, "
          f"recall@5 {start['val_recall@5']:.3f} -> {end['val_recall@5']:.3f}")
print(f"saved to {config.output_dir}/ (AutoModel.from_pretrained({config.output_dir!r}))")
