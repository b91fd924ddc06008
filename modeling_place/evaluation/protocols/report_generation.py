"""Report generation on the synthetic benchmark: a BERT decoder (transformers) over patch tokens and V-PORs.

    python examples/finetune_report_generation.py --model place-tiny --num_beams 3

Protocol (docs/METHOD.md): teacher-forced cross-entropy on the report split's train part (10 % held out for
checkpoint selection by validation loss), beam-search generation on test, BLEU-1..4, ROUGE-L and CIDEr-D
against the processed reference reports (FINDINGS + IMPRESSION sentences). Writes
`<output_dir>/report_generation.json` and the selected model.
"""

import argparse
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoProcessor

import modeling_place  # noqa: F401  (registers PlaceProcessor with AutoProcessor)
from modeling_place.evaluation.downstream import (
    HeadTask, Stopwatch, add_common_arguments, batches, fit, fit_config, head_seed, load_split, pixels_of,
    report_metrics, report_targets, run_from_command_line, save_head, shuffled, task_image_processor,
    to_model_device, write_results,
)
from modeling_place import PlaceForReportGeneration


def run(settings: argparse.Namespace) -> dict:
    clock = Stopwatch()
    data = load_split("report", settings)
    held_out = data["train"].train_test_split(test_size=0.1, seed=settings.seed)
    train, validation = held_out["train"], held_out["test"]
    text_processor = AutoProcessor.from_pretrained(settings.model)
    tokenizer = text_processor.tokenizer
    torch.manual_seed(head_seed(settings.seed, 0))  # the same decoder initialisation for every encoder compared
    model = PlaceForReportGeneration.from_pretrained(
        settings.model, decoder_layers=settings.decoder_layers, decoder_hidden_size=settings.decoder_hidden_size,
        decoder_num_heads=settings.decoder_num_heads, decoder_max_length=settings.max_length,
        report_bos_token_id=tokenizer.cls_token_id, report_eos_token_id=tokenizer.sep_token_id,
        report_pad_token_id=tokenizer.pad_token_id, freeze_encoder=True, dtype=torch.float32)
    image_processor = task_image_processor(model.config)
    text_processor.image_processor = image_processor  # the saved folder ships the one the model was evaluated with
    text_processor.text_mode = "prompt"  # and prepares generation prompts (pipeline("image-text-to-text"))

    def teacher_forced(rows: dict[str, list]) -> dict[str, Any]:
        ids = report_targets(text_processor, rows["report"], settings.max_length)[1]
        return {"pixel_values": pixels_of(image_processor, rows), "input_ids": ids, "labels": ids}

    @torch.no_grad()
    def validate() -> float:  # negative teacher-forced loss: higher is better
        losses = [model(**to_model_device(model, teacher_forced(rows))).loss.item()
                  for rows in batches(validation, settings.batch_size)]
        return -float(sum(losses) / len(losses))

    order = lambda epoch: [shuffled(len(train), epoch)]  # noqa: E731
    task = HeadTask(model, len(train), order, lambda indices: teacher_forced(train[indices]), validate)
    trained = fit(task, fit_config(settings))
    metrics = report_metrics(model, image_processor, text_processor, data["test"], settings.batch_size,
                             settings.num_beams, settings.max_length - 1)
    print("   test " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "example"))
    print(f"   example: {metrics['example']!r}")
    heads = {"-report-generation": save_head(model, text_processor, f"{settings.output_dir}/report_generation")}
    payload = {"task": "report_generation", "results": {"test": metrics, **trained}, "seconds": clock.seconds}
    return write_results(settings, "report_generation", payload, heads)


def parser() -> argparse.ArgumentParser:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), epochs=10, lr=5e-4)
    parser.add_argument("--decoder_layers", type=int, default=3)
    parser.add_argument("--decoder_hidden_size", type=int, default=256)
    parser.add_argument("--decoder_num_heads", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=128, help="report tokens, [CLS] and [SEP] included")
    parser.add_argument("--num_beams", type=int, default=3)
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (`examples/finetune_report_generation.py`)."""
    return run_from_command_line("report generation", parser, run, argv)
