"""Difficulty and speed of the synthetic chest X-ray benchmark (targets in docs/BENCHMARK.md).

Three measurements on the ``classify`` split (100 % of train, AUROC on test, macro over the FINDINGS labels):
1. linear probe (one logistic regression per label) on the final-norm CLS feature of a *random-init* frozen
   tiny ViT: must stay <= 0.75 (pixels alone are not trivially separable);
2. the same tiny ViT trained from scratch with multi-label BCE: must land in [0.80, 0.97] (learnable, not
   saturated); the epoch is chosen on validation, never on test;
3. generation speed of image-report pairs on one core: must be >= 200 pairs/s at 256 px.

Usage: ``python3 benchmarks/synthetic_difficulty.py`` (about 10 min on 2 cores) or ``--quick`` (smoke test).
Prints a table and writes ``benchmarks/results/synthetic_difficulty.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from modeling_place.data.synthetic_cxr import FINDINGS, build_split, generate_case

RESULTS = Path(__file__).resolve().parent / "results" / "synthetic_difficulty.json"


def tiny_vit(image_size: int, num_classes: int) -> torch.nn.Module:
    """ViT-Tiny width (192, 3 heads) at depth 4, one input channel; CLS token after the final norm."""
    import timm

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=image_size, depth=4, in_chans=1,
                             num_classes=num_classes)


def to_tensors(dataset, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images resized to ``image_size`` and standardised (N, 1, S, S) float32, labels (N, L) float32."""
    images = np.stack([np.asarray(img.convert("L").resize((image_size, image_size), Image.BILINEAR))
                       for img in dataset["image"]]).astype(np.float32)
    images = (images / 255.0 - 0.5) / 0.25
    return torch.from_numpy(images[:, None]), torch.tensor(dataset["labels"], dtype=torch.float32)


def mean_auroc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, dict[str, float]]:
    """Macro AUROC over the labels that have both classes in ``labels``."""
    per_label = {name: float(roc_auc_score(labels[:, i], scores[:, i]))
                 for i, name in enumerate(FINDINGS) if 0 < labels[:, i].sum() < len(labels)}
    return float(np.mean(list(per_label.values()))), per_label


@torch.no_grad()
def cls_features(model: torch.nn.Module, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    model.eval()
    return torch.cat([model.forward_head(model.forward_features(images[i:i + batch]), pre_logits=True)
                      for i in range(0, len(images), batch)]).float().numpy()


def random_init_probe(train, test, image_size: int, seed: int) -> tuple[float, dict[str, float]]:
    """Logistic-regression probe per label on frozen random-init CLS features."""
    torch.manual_seed(seed)
    model = tiny_vit(image_size, 0)
    features_train, features_test = cls_features(model, train[0]), cls_features(model, test[0])
    scaler = StandardScaler().fit(features_train)
    x_train, x_test = scaler.transform(features_train), scaler.transform(features_test)
    scores = np.zeros(test[1].shape, dtype=np.float64)
    for i in range(len(FINDINGS)):
        y = train[1][:, i].numpy()
        if 0 < y.sum() < len(y):
            probe = LogisticRegression(max_iter=2000, C=0.5).fit(x_train, y)
            scores[:, i] = probe.decision_function(x_test)
    return mean_auroc(test[1].numpy(), scores)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(images[i:i + batch].to(device)).float().cpu()
                      for i in range(0, len(images), batch)]).numpy()


def supervised_from_scratch(train, validation, test, image_size: int, epochs: int, seed: int,
                            device: str = "cpu") -> dict:
    """Train the tiny ViT with BCE (fp32, AdamW, warmup + cosine), pick the epoch on validation AUROC.

    fp32 on purpose: CPU bf16 autocast is ~10x slower than fp32 on machines without AMX kernels.
    """
    torch.manual_seed(seed)
    model = tiny_vit(image_size, len(FINDINGS)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    steps = epochs * ((len(train[0]) + 63) // 64)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + np.cos(np.pi * step / steps)))
    best = {"val_auroc": -1.0}
    for epoch in range(epochs):
        model.train()
        for index in torch.randperm(len(train[0])).split(64):
            images, targets = train[0][index].to(device), train[1][index].to(device)
            flip = (torch.rand(len(index)) < 0.5).to(device)  # labels carry no side: a mirror keeps them true
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        val_auroc, _ = mean_auroc(validation[1].numpy(), predict(model, validation[0]))
        print(f"  epoch {epoch + 1}/{epochs}: loss {loss.item():.3f} val AUROC {val_auroc:.3f}", flush=True)
        if val_auroc > best["val_auroc"]:
            test_auroc, per_label = mean_auroc(test[1].numpy(), predict(model, test[0]))
            best = {"val_auroc": val_auroc, "epoch": epoch + 1, "test_auroc": test_auroc, "per_label": per_label}
    return best


def generation_speed(count: int, image_size: int = 256) -> float:
    """Image-report pairs per second generated by one process on one core."""
    generate_case(0, image_size)  # warm the per-size caches (grids, textures)
    start = time.perf_counter()
    for seed in range(1, count + 1):
        generate_case(seed, image_size)
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny split and 2 epochs: a smoke test")
    parser.add_argument("--train-size", type=int, default=128, help="pixels the ViT sees")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the supervised ViT trains (the probe and the speed test stay on CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    results: dict = {"generation_pairs_per_s": generation_speed(60 if args.quick else 400)}
    if not args.speed_only:
        size, epochs = (300, 2) if args.quick else (None, 15)
        data = build_split("classify", args.cache_dir, seed=args.seed, size=size, num_proc=args.num_proc)
        train, validation, test = (to_tensors(data[name], args.train_size) for name in ("train", "validation", "test"))
        probe_auroc, probe_per_label = random_init_probe(train, test, args.train_size, args.seed)
        supervised = supervised_from_scratch(train, validation, test, args.train_size, args.epochs or epochs,
                                             args.seed, args.device)
        results.update(random_init_probe_auroc=probe_auroc, random_init_probe_per_label=probe_per_label,
                       supervised_auroc=supervised["test_auroc"], supervised_per_label=supervised["per_label"],
                       supervised_epoch=supervised["epoch"], train_size=len(train[0]), test_size=len(test[0]),
                       image_size=args.train_size, epochs=args.epochs or epochs, device=args.device,
                       quick=args.quick)
    print_table(results)
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return results


def print_table(results: dict) -> None:
    rows = [("generation pairs/s (1 core, 256 px)", results["generation_pairs_per_s"], ">= 200")]
    if "random_init_probe_auroc" in results:
        rows += [("random-init probe mean AUROC", results["random_init_probe_auroc"], "<= 0.75"),
                 ("supervised from scratch mean AUROC", results["supervised_auroc"], "0.80 - 0.97")]
    print(f"{'measure':40s} {'value':>8s}  target")
    for name, value, target in rows:
        print(f"{name:40s} {value:8.3f}  {target}")
    for key in ("random_init_probe_per_label", "supervised_per_label"):
        if key in results:
            print(key + ": " + ", ".join(f"{k} {v:.2f}" for k, v in results[key].items()))


if __name__ == "__main__":
    main()
