"""The subprocess phases of benchmarks/gpu.py: the base recipe trained end to end with `accelerate launch`, and
extra shell commands given on the command line, each timed, bounded by the script's deadline and killed with its
whole process group when the time is up (a watchdog that ends the parent must not leave a GPU job running)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "examples" / "configs" / "base_mimic.yaml"
OUTPUT_TAIL = 2000  # characters of a command's output kept in the JSON


class ChildProcesses:
    """The running subprocess, so the watchdog can end its process group before exiting."""

    def __init__(self) -> None:
        self.current: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def kill(self) -> None:
        with self.lock:
            if self.current is not None and self.current.poll() is None:
                os.killpg(self.current.pid, signal.SIGKILL)


CHILDREN = ChildProcesses()


def run_timed(command: list[str], timeout_s: float, env: dict[str, str] | None = None,
              cwd: Path = REPO) -> dict[str, Any]:
    """Run `command` in its own process group for at most `timeout_s`; rc, seconds and the output's tail."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                               env={**os.environ, **(env or {})}, start_new_session=True)
    with CHILDREN.lock:
        CHILDREN.current = process
    try:
        output, _ = process.communicate(timeout=max(1.0, timeout_s))
        status = "ok" if process.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        status = "timed out"
    finally:
        with CHILDREN.lock:
            CHILDREN.current = None
    return {"status": status, "returncode": process.returncode, "seconds": time.perf_counter() - start,
            "output_tail": (output or "")[-OUTPUT_TAIL:]}


def launch_prefix(device: str) -> list[str]:
    """`accelerate launch` over every visible GPU (DDP past one), bf16; one plain process on CPU."""
    common = ["--num_machines", "1", "--dynamo_backend", "no"]
    if not device.startswith("cuda"):
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--mixed_precision", "no",
                *common]
    gpus = torch.cuda.device_count()
    multi = ["--multi_gpu"] if gpus > 1 else []
    return [sys.executable, "-m", "accelerate.commands.launch", *multi, "--num_processes", str(gpus),
            "--mixed_precision", "bf16", *common]


def train_arguments(args: Any, folder: Path) -> list[str]:
    """examples/pretrain.py on the recipe with the synthetic benchmark and no downloads (the GPU machine reaches no
    Hub): from scratch, a WordPiece vocabulary of the reports, a short schedule, no trackers."""
    warmup = max(1, args.train_steps // 10)  # the recipe's 40 % would leave a short run at a tiny learning rate
    overrides = {"dataset": "synthetic", "init_vision": "none", "init_text": "none",
                 "synthetic_size": args.train_pairs, "max_steps": args.train_steps, "warmup_steps": warmup,
                 "batch_size": args.train_batch, "eval_every": args.train_steps, "checkpoint_every": args.train_steps,
                 "validation_pairs": args.train_validation, "num_workers": args.train_workers, "trackers": ",",
                 "output_dir": folder / "model", "run_dir": folder / "run", "log_every": max(1, args.train_steps // 20),
                 "progress_bar": "false", "mixed_precision": "bf16" if args.device.startswith("cuda") else "no"}
    if args.tiny:
        overrides.update(preset="tiny", text_layers=1, vocab_size=300, max_length=48)
    return [str(REPO / "examples" / "pretrain.py"), str(RECIPE), *(f"--{k}={v}" for k, v in overrides.items())]


def training_curve(run_dir: Path) -> dict[str, Any]:
    """First and last logged training loss, the validation records, and whether the loss fell."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [record for record in records if record["kind"] == "train"]
    validation = [record for record in records if record["kind"] == "validation"]
    first, last = train[0]["loss"], train[-1]["loss"]
    return {"first_train_loss": first, "last_train_loss": last, "loss_fell": last < first,
            "train_log": [{k: r[k] for k in ("step", "loss", "loss_ita", "loss_pcma", "loss_ce")} for r in train],
            "validation": validation}


def loads_with_automodel(folder: Path) -> dict[str, Any]:
    """Whether the saved folder loads with `AutoModel` (the package registers PLACE), and what it is."""
    from transformers import AutoModel

    import modeling_place  # noqa: F401  registers PLACE with the Auto classes

    model = AutoModel.from_pretrained(folder)
    return {"loads": True, "class": type(model).__name__, "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "text_layers": model.config.text_config.num_hidden_layers,
            "vision_architecture": model.config.vision_config.architecture}


def train_phase(args: Any, folder: Path, timeout_s: float) -> dict[str, Any]:
    """Train the recipe (synthetic data, 224 px for `base`) and check the curve and the saved folder."""
    command = launch_prefix(args.device) + train_arguments(args, folder)
    result = run_timed(command, timeout_s, env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    result["command"] = " ".join(command)
    if result["status"] != "ok":
        return result
    summary = json.loads((folder / "model" / "training_summary.json").read_text())
    result.update(steps=summary["steps"], train_seconds=summary["seconds"], samples_per_s=summary["samples_per_s"],
                  curve=training_curve(folder / "run"), saved=loads_with_automodel(folder / "model"))
    return result


def command_phase(commands: list[str], model_folder: Path, deadline: float) -> list[dict[str, Any]]:
    """Each `NAME=SHELL COMMAND` in order, with the time left; $PLACE_GPU_MODEL is the trained folder."""
    rows = []
    for item in commands:
        name, _, command = item.partition("=")
        left = deadline - time.monotonic()
        if left < 5:
            rows.append({"name": name, "command": command, "status": "skipped: time budget"})
            continue
        env = {"PLACE_GPU_MODEL": str(model_folder), "HF_HUB_OFFLINE": "1"}
        rows.append({"name": name, "command": command, **run_timed(["bash", "-c", command], left, env)})
    return rows
