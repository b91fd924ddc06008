"""Tiny configurations and random batches shared by the model tests."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from modeling_place import PlaceConfig


def micro_config(**overrides: Any) -> dict[str, Any]:
    """A PLACE configuration small enough for a forward+backward in milliseconds (32 px, 16 patches)."""
    config = {
        "vision_config": {
            "architecture": "vit_tiny_patch16_224",
            "model_args": {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 48, "num_heads": 3},
        },
        "text_config": {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "intermediate_size": 64, "max_position_embeddings": 64},
        "projection_dim": 16,
        "num_queries": 4,
        "max_sentences": 4,
        "vpoe_num_heads": 3,
        "fusion_num_heads": 3,
        "ce_dim": 8,
    }
    config.update(overrides)
    return config


def random_batch(config: PlaceConfig, batch: int, seed: int = 0, length: int = 12) -> dict[str, torch.Tensor]:
    """Image–report batch with sentence structure and duplicate sentence hashes across reports."""
    g = torch.Generator().manual_seed(seed)
    size = config.image_size
    input_ids = torch.randint(5, config.text_config.vocab_size, (batch, length), generator=g)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[0, -3:] = 0  # one padded report
    # tokens 1..length-2 are spread over up to K sentences; CLS, SEP and padding get -1
    per_sentence = (length - 2) // config.max_sentences + 1
    sentence_ids = torch.full((batch, length), -1, dtype=torch.long)
    sentence_ids[:, 1:-1] = torch.arange(length - 2) // per_sentence
    sentence_ids[attention_mask == 0] = -1
    sentence_hashes = torch.randint(1, 4, (batch, config.max_sentences), generator=g)
    present = (sentence_ids.unsqueeze(-1) == torch.arange(config.max_sentences)).any(1)
    return {
        # smooth, distinct images (iid noise would make every image look alike to a ViT)
        "pixel_values": F.interpolate(torch.rand(batch, 3, 4, 4, generator=g), size=size, mode="bilinear"),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "sentence_ids": sentence_ids,
        "sentence_hashes": sentence_hashes * present,
    }


def synthetic_report_tokenizer(reports: int = 40, vocab_size: int = 300, model_max_length: int = 48) -> Any:
    """A WordPiece tokenizer trained on the first `reports` synthetic reports (seconds, no download)."""
    from modeling_place.data.synthetic_cxr import generate_case
    from modeling_place.processing.tokenization_place import train_wordpiece_tokenizer

    corpus = [generate_case(seed)["report"] for seed in range(reports)]
    return train_wordpiece_tokenizer(corpus, vocab_size=vocab_size, model_max_length=model_max_length)



def spawn_launcher(function: Any, args: tuple = (), num_processes: int = 2) -> None:
    """`accelerate.debug_launcher`, but with spawned ranks on a free port.

    debug_launcher forks: a child forked after the parent's OpenMP pool has run (any earlier test) can deadlock
    at its first parallel op, and its fixed port 29500 collides with a concurrent run. Spawned ranks import
    afresh, so `function` must be a module-level function.
    """
    import socket
    import tempfile

    from accelerate.utils import PrepareForLaunch, patch_environment
    from torch.multiprocessing import start_processes

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.NamedTemporaryFile() as rendezvous, patch_environment(
        world_size=num_processes, master_addr="127.0.0.1", master_port=str(port), accelerate_mixed_precision="no",
        accelerate_debug_rdv_file=rendezvous.name, accelerate_use_cpu="yes", gloo_socket_ifname="lo",
        omp_num_threads="1",
    ):
        start_processes(PrepareForLaunch(function, debug=True), args=args, nprocs=num_processes, start_method="spawn")
