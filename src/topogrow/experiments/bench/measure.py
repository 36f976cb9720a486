"""What every section of the bench shares: timing, the machine's load and memory, the log, the
small networks measured."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from topogrow.experiments.bench.config import BenchConfig
from topogrow.nn import ResidualMLP
from topogrow.nn.cnn import ResidualCNN


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], Any], repeats: int, device: torch.device, budget_s: float = 20.0
) -> tuple[float, list[float], Any]:
    """``(median seconds, every time, last result)`` of ``fn()`` over up to ``repeats`` runs;
    stops repeating once the runs so far took ``budget_s``."""
    times, result = [], None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
        if sum(times) >= budget_s:
            break
    return statistics.median(times), times, result


def cpu_seconds() -> tuple[float, float] | None:
    """``(busy CPU seconds of the whole machine, of this process and its children)`` (Linux)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / ticks  # all but idle and iowait
    own = os.times()
    return busy, own.user + own.system + own.children_user + own.children_system


def other_load(before: tuple[float, float] | None, seconds: float) -> float | None:
    """Cores kept busy by other processes meanwhile (0: the machine was ours)."""
    after = cpu_seconds()
    if before is None or after is None or seconds <= 0:
        return None
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / seconds)


def log(message: str) -> None:
    """One timestamped progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine(cfg: BenchConfig) -> dict[str, Any]:
    """What the numbers were measured on: device, CPU, threads, versions, load."""
    device = cfg.torch_device
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "quick": cfg.quick,
        "repeats": cfg.runs,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def bench_mlp(width: int, depth: int, device: torch.device, seed: int = 0) -> ResidualMLP:
    """The bench's California network: a seeded ResidualMLP, 8 features -> 1."""
    torch.manual_seed(seed)
    return ResidualMLP(8, width, depth, 1).to(device)


def bench_cnn(device: torch.device, seed: int = 0) -> ResidualCNN:
    """The bench's MNIST network: a seeded ResidualCNN, channels (8, 16), one layer per stage."""
    torch.manual_seed(seed)
    return ResidualCNN(1, (8, 16), (1, 1), 10).to(device)


def rss_bytes() -> int:
    """Peak resident memory of this process so far (``ru_maxrss``)."""
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def status_bytes(field_name: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status`` (Linux), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def reset_peak() -> bool:
    """Reset the peak-RSS mark (``VmHWM``) to the current RSS: Linux's ``clear_refs`` 5."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return status_bytes("VmHWM") is not None
