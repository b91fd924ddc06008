"""Inference costs: image-embedding throughput, and image-to-report retrieval over large report galleries.

    python benchmarks/inference.py             # tiny + base embeddings; galleries of 10^4, 10^5, 10^6 reports
    python benchmarks/inference.py --quick     # tiny only, galleries of 10^3 and 10^4
    pip install faiss-cpu                      # (or `pip install -e ".[faiss]"`) adds the approximate index rows

Embedding: `model.get_image_features(pixel_values).pooler_output` under `torch.inference_mode`, images/s.
Retrieval: a gallery of random L2-normalised report embeddings (d = `projection_dim`), drawn around random
cluster centres as real report embeddings are (reports repeat a small set of findings; uniformly random 128-d
vectors have no near neighbours at all, which no index can exploit; `--gallery uniform` gives that worst case).
Queries are "image embeddings" planted near known gallery items. Exact search is a matmul + top-k in torch:
batched (per-query ms = batch time / queries) and one query at a time (latency). With faiss importable, an
IVF-Flat inner-product index is built and searched at several `nprobe`: recall@10 against the exact top-10 and
per-query latency. Goals: exact < 20 ms per query at 10^6 on CPU; faiss recall@10 >= 0.95.
Writes benchmarks/results/inference.json.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make the repo root importable

from benchmarks.common import (
    autocast_dtype,
    machine_info,
    median,
    print_table,
    repeat_times,
    results_path,
    timed,
    write_report,
)
from modeling_place import PlaceConfig, PlaceModel

RESULTS = results_path("inference")
TOP_K = 10
SCORE_BLOCK = 2**25  # similarity-matrix elements per exact-search chunk (128 MiB of fp32)
GOAL_EXACT_MS = 20.0
GOAL_RECALL = 0.95


def embedding_throughput(preset: str, batch_size: int, batches: int, device: torch.device,
                         dtype: str) -> dict[str, Any]:
    """Images/s of the global image embedding (a warm-up batch, then the median of `batches` batches)."""
    torch.manual_seed(0)
    model = PlaceModel(PlaceConfig.from_preset(preset)).to(device).eval()
    pixels = torch.randn(batch_size, 3, model.config.image_size, model.config.image_size, device=device)
    precision = autocast_dtype(dtype)

    def embed() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, dtype=precision or torch.float32,
                                                     enabled=precision is not None):
            return model.get_image_features(pixel_values=pixels).pooler_output

    seconds = median(repeat_times(embed, device, batches))
    return {"preset": preset, "batch": batch_size, "dtype": dtype, "batch_s": seconds,
            "images_per_s": batch_size / seconds, "embedding_dim": int(embed().shape[-1])}


def random_gallery(size: int, dim: int, seed: int, clusters: int | None) -> torch.Tensor:
    """`size` L2-normalised embeddings; around `clusters` random centres (spread 0.5 per unit direction), or
    uniform on the sphere when `clusters` is None."""
    generator = torch.Generator().manual_seed(seed)
    gallery = torch.randn(size, dim, generator=generator)
    if clusters:
        centres = F.normalize(torch.randn(clusters, dim, generator=generator), dim=-1)
        assignment = torch.randint(clusters, (size,), generator=generator)
        gallery = centres[assignment] + gallery * (0.5 / math.sqrt(dim))
    return F.normalize(gallery, dim=-1)


def planted_queries(gallery: torch.Tensor, count: int, seed: int,
                    noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries close to known gallery items (an image near its own report): (queries, their items' indices)."""
    generator = torch.Generator().manual_seed(seed + 1)
    targets = torch.randperm(gallery.shape[0], generator=generator)[:count]
    noise_vectors = torch.randn(count, gallery.shape[1], generator=generator) * (noise / math.sqrt(gallery.shape[1]))
    return F.normalize(gallery[targets] + noise_vectors, dim=-1), targets


def exact_search(queries: torch.Tensor, gallery: torch.Tensor, k: int = TOP_K) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k inner products of every query over the whole gallery (matmul + topk, query chunks bounded in memory)."""
    chunk = max(1, SCORE_BLOCK // gallery.shape[0])
    scores, indices = zip(*(torch.topk(block @ gallery.T, k, dim=1) for block in queries.split(chunk)), strict=True)
    return torch.cat(scores), torch.cat(indices)


def search_latency(search: Callable[[torch.Tensor], Any], queries: torch.Tensor,
                   single_queries: int) -> dict[str, float]:
    """Per-query ms of one batched search of all `queries`, and the median latency of single-query searches."""
    cpu = torch.device("cpu")
    batched = timed(lambda: search(queries), cpu)
    search(queries[:1])  # warm-up
    singles = [timed(lambda row=row: search(row), cpu) for row in queries[:single_queries].split(1)]
    return {"batched_ms_per_query": 1e3 * batched / queries.shape[0], "single_query_ms": 1e3 * median(singles)}


def exact_rows(gallery: torch.Tensor, queries: torch.Tensor, targets: torch.Tensor,
               single_queries: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Exact search timings, the share of planted queries whose own item ranks first, and the exact top-k."""
    _, indices = exact_search(queries, gallery)
    latency = search_latency(lambda batch: exact_search(batch, gallery), queries, single_queries)
    row = {"gallery_size": gallery.shape[0], "method": "exact", "index": "torch matmul + topk",
           "queries": queries.shape[0],
           "planted_top1_accuracy": (indices[:, 0] == targets).float().mean().item(), "recall_at_10": 1.0, **latency}
    return row, indices


def load_faiss() -> tuple[ModuleType | None, str | None]:
    """faiss, or None and the reason it is unavailable."""
    try:
        return importlib.import_module("faiss"), None
    except ImportError as error:
        return None, f"faiss not importable ({error}); pip install faiss-cpu"


def recall_at_k(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean fraction of each query's exact top-k that the approximate top-k also returns."""
    hits = (found.unsqueeze(-1) == exact.unsqueeze(-2)).any(-1).sum(-1)
    return (hits.float() / exact.shape[1]).mean().item()


def faiss_rows(faiss: ModuleType, gallery: torch.Tensor, queries: torch.Tensor, exact: torch.Tensor,
               nprobes: list[int], single_queries: int) -> list[dict[str, Any]]:
    """An IVF-Flat inner-product index (nlist ~ 4 sqrt(N), k-means on <= 64 points per list) at several nprobe."""
    faiss.omp_set_num_threads(torch.get_num_threads())
    size, dim = gallery.shape
    nlist = max(1, min(int(4 * math.sqrt(size)), size // 39))  # faiss wants >= 39 training points per list
    start = time.perf_counter()
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    vectors = gallery.numpy()
    sample = vectors[torch.randperm(size, generator=torch.Generator().manual_seed(0))[: 64 * nlist].numpy()]
    index.train(sample)
    index.add(vectors)
    build_s = time.perf_counter() - start
    rows = []
    for nprobe in sorted({min(p, nlist) for p in nprobes}):
        index.nprobe = nprobe

        def search(batch: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(index.search(batch.numpy(), TOP_K)[1])

        rows.append({"gallery_size": size, "method": "faiss", "index": f"IVF-Flat nlist={nlist} nprobe={nprobe}",
                     "nlist": nlist, "nprobe": nprobe, "queries": queries.shape[0], "build_s": build_s,
                     "recall_at_10": recall_at_k(search(queries), exact),
                     **search_latency(search, queries, single_queries)})
    return rows


def retrieval(sizes: list[int], dim: int, args: argparse.Namespace, faiss: ModuleType | None) -> list[dict[str, Any]]:
    """Exact (and faiss) rows for every gallery size, `dim`-dimensional embeddings."""
    rows = []
    for size in sizes:
        clusters = None if args.gallery == "uniform" else max(1, int(math.sqrt(size)))
        gallery = random_gallery(size, dim, args.seed, clusters)
        queries, targets = planted_queries(gallery, args.queries, args.seed)
        row, exact = exact_rows(gallery, queries, targets, args.single_queries)
        rows.append(row)
        if faiss is not None:
            rows += faiss_rows(faiss, gallery, queries, exact, args.nprobes, args.single_queries)
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="embedding autocast")
    parser.add_argument("--gallery-sizes", nargs="+", type=int, default=[10**4, 10**5, 10**6])
    parser.add_argument("--gallery", choices=["clustered", "uniform"], default="clustered")
    parser.add_argument("--queries", type=int, default=1024, help="batched queries")
    parser.add_argument("--single-queries", type=int, default=50, help="one-at-a-time queries timed")
    parser.add_argument("--nprobes", nargs="+", type=int, default=[8, 32, 128])
    parser.add_argument("--no-faiss", action="store_true", help="skip faiss even when it is importable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="embedding device (retrieval runs on CPU)")
    parser.add_argument("--quick", action="store_true", help="tiny, 2 batches of 4; galleries 10^3 and 10^4")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.presets, args.batch_size, args.batches = ["tiny"], 4, 2
        args.gallery_sizes, args.queries, args.single_queries, args.nprobes = [10**3, 10**4], 64, 5, [4, 32]
    return args


def goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Exact per-query ms at the largest gallery, and the best faiss recall@10 there."""
    largest = max(row["gallery_size"] for row in rows)
    at_largest = [row for row in rows if row["gallery_size"] == largest]
    exact_ms = next(row["batched_ms_per_query"] for row in at_largest if row["method"] == "exact")
    recalls = [row["recall_at_10"] for row in at_largest if row["method"] == "faiss"]
    return {"gallery_size": largest, "exact_ms_per_query": exact_ms, "exact_goal_ms": GOAL_EXACT_MS,
            "exact_met": exact_ms < GOAL_EXACT_MS, "faiss_best_recall_at_10": max(recalls, default=None),
            "faiss_goal_recall": GOAL_RECALL, "faiss_met": max(recalls) >= GOAL_RECALL if recalls else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    faiss, reason = (None, "disabled with --no-faiss") if args.no_faiss else load_faiss()
    embedding = [embedding_throughput(p, args.batch_size, args.batches, device, args.dtype) for p in args.presets]
    dim = PlaceConfig.from_preset(args.presets[0]).projection_dim
    rows = retrieval(args.gallery_sizes, dim, args, faiss)
    report = {**machine_info(device), "embedding": embedding,
              "retrieval": {"gallery": args.gallery, "dim": dim,
                            "rows": rows},
              "faiss": {"available": faiss is not None, "version": getattr(faiss, "__version__", None),
                        "reason": reason},
              "goals": goals(rows)}
    _print_report(report)
    write_report(report, args.output)
    return report


def _print_report(report: dict[str, Any]) -> None:
    print_table(report["embedding"], [("preset", "preset", ""), ("batch", "batch", "d"), ("dtype", "dtype", ""),
                                      ("images_per_s", "images/s", ".1f")],
                title=f"{report['machine']}: image embedding (get_image_features, inference_mode)")
    print_table(report["retrieval"]["rows"], [("gallery_size", "gallery", ",d"), ("method", "method", ""),
                                              ("index", "index", ""), ("recall_at_10", "recall@10", ".3f"),
                                              ("batched_ms_per_query", "batched ms/query", ".3f"),
                                              ("single_query_ms", "1-query ms", ".2f"), ("build_s", "build s", ".1f")],
                title=f"\nimage-to-report retrieval, {report['retrieval']['gallery']} gallery, top-{TOP_K}")
    if not report["faiss"]["available"]:
        print(f"faiss: unavailable — {report['faiss']['reason']}")
    goal = report["goals"]
    print(f"goals at {goal['gallery_size']:,}: exact {goal['exact_ms_per_query']:.2f} ms/query "
          f"(< {GOAL_EXACT_MS:g}: {goal['exact_met']}); faiss recall@10 {goal['faiss_best_recall_at_10']} "
          f"(>= {GOAL_RECALL}: {goal['faiss_met']})")


if __name__ == "__main__":
    main()
