"""Report generation on the synthetic benchmark: a transformer decoder over patch tokens and V-PORs.

    python examples/finetune_report_generation.py --model place-tiny --num_beams 3

Protocol (METHOD.md): teacher-forced cross-entropy on the report split's train part (10 % held out for
checkpoint selection by validation loss), beam-search generation on test, BLEU-1..4, ROUGE-L and CIDEr-D
against the processed reference reports (FINDINGS + IMPRESSION sentences). Writes
`<output_dir>/report_generation.json` and the selected model.
"""

import argparse
import json

import torch
from transformers import AutoProcessor

import processing  # noqa: F401  (registers PlaceProcessor with AutoProcessor)
from evaluation.downstream import (
    Stopwatch, add_common_arguments, batches, fit, load_split, pixels_of, push_if_asked, report_metrics,
    report_targets, task_image_processor, write_json,
)
from modeling_place import PlaceForReportGeneration


def run(settings: argparse.Namespace) -> dict:
    clock = Stopwatch()
    data = load_split("report", settings)
    held_out = data["train"].train_test_split(test_size=0.1, seed=settings.seed)
    train, validation = held_out["train"], held_out["test"]
    text_processor = AutoProcessor.from_pretrained(settings.model)
    tokenizer = text_processor.tokenizer
    model = PlaceForReportGeneration.from_pretrained(
        settings.model, decoder_layers=settings.decoder_layers, decoder_hidden_size=settings.decoder_hidden_size,
        decoder_num_heads=settings.decoder_num_heads, decoder_max_length=settings.max_length,
        report_bos_token_id=tokenizer.cls_token_id, report_eos_token_id=tokenizer.sep_token_id,
        report_pad_token_id=tokenizer.pad_token_id, dtype=torch.float32)
    image_processor = task_image_processor(model.config)

    def step_batches(epoch: int):
        for rows in batches(train, settings.batch_size, shuffle=True, seed=epoch):
            ids = report_targets(text_processor, rows["report"], settings.max_length)[1]
            yield {"pixel_values": pixels_of(image_processor, rows), "input_ids": ids, "labels": ids}

    @torch.no_grad()
    def validate() -> float:  # negative teacher-forced loss: higher is better
        losses = [model(**batch).loss.item() for batch in _validation_batches()]
        return -float(sum(losses) / len(losses))

    def _validation_batches():
        for rows in batches(validation, settings.batch_size):
            ids = report_targets(text_processor, rows["report"], settings.max_length)[1]
            yield {"pixel_values": pixels_of(image_processor, rows), "input_ids": ids, "labels": ids}

    trained = fit(model, step_batches, validate, settings.epochs, settings.lr)
    metrics = report_metrics(model, image_processor, text_processor, data["test"], settings.batch_size,
                             settings.num_beams, settings.max_length - 1)
    print("   test " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "example"))
    print(f"   example: {metrics['example']!r}")
    model.save_pretrained(f"{settings.output_dir}/report_generation")
    text_processor.save_pretrained(f"{settings.output_dir}/report_generation")
    push_if_asked(model, settings, "-report-generation")
    payload = {"task": "report_generation", "results": {"test": metrics, **trained}, "seconds": clock.seconds}
    write_json(f"{settings.output_dir}/report_generation.json", payload)
    return payload


def parser() -> argparse.ArgumentParser:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), epochs=10, lr=5e-4)
    parser.add_argument("--decoder_layers", type=int, default=3)
    parser.add_argument("--decoder_hidden_size", type=int, default=256)
    parser.add_argument("--decoder_num_heads", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=128, help="report tokens, [CLS] and [SEP] included")
    parser.add_argument("--num_beams", type=int, default=3)
    return parser


if __name__ == "__main__":
    settings = parser().parse_args()
    print("report generation configuration:", json.dumps(vars(settings), indent=2))
    run(settings)
