"""Section ``wide_growth``: td against random growth at width 256 (time and peak memory), each run
in a fresh process."""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from topogrow.experiments.bench.config import SECTIONS, BenchConfig
from topogrow.experiments.bench.measure import log, reset_peak, rss_bytes, status_bytes
from topogrow.growth import GrowthConfig
from topogrow.nn import ResidualMLP

WIDE_PROBE = """
import json, sys
from topogrow.experiments.bench.wide_growth import wide_growth_probe
print(json.dumps(wide_growth_probe(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
"""


def wide_growth_probe(strategy: str, samples: int, width: int, threads: int) -> dict[str, Any]:
    """Run in a fresh process: a growth run of width ``width`` on ``samples`` samples of 50 features,
    depth 1 -> 3, one epoch per stage; its wall time and the process's peak resident memory."""
    from topogrow.growth import Grower

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 50, generator=g)
    y = torch.sin(x[:, :5].sum(dim=1, keepdim=True)) + 0.1 * torch.randn(samples, 1, generator=g)
    torch.manual_seed(0)
    model = ResidualMLP(50, width, 1, 1)
    config = GrowthConfig(strategy=strategy, max_depth=3, epochs_per_stage=1, final_epochs=1, batch_size=256, seed=0)
    config = config.replace(device="cpu", early_stopping=False, rollback=False, growth_patience=100)
    gc.collect()
    before = status_bytes("VmRSS") if reset_peak() else rss_bytes()
    start = time.perf_counter()
    history = Grower(model, "mse", config).fit((x, y))
    seconds = time.perf_counter() - start
    peak = status_bytes("VmHWM") or rss_bytes()
    return {
        "strategy": strategy,
        "seconds": seconds,
        "peak_bytes": peak,
        "extra_bytes": peak - before,
        "depth": model.depth,
        "td_samples": [s.td_samples for s in history.stages if s.td_samples],
    }


@SECTIONS.register("wide_growth", help="td against random growth at width 256 (time and memory)")
def bench_wide_growth(cfg: BenchConfig) -> dict[str, Any]:
    """td and random growth runs at width 256 (20,000 samples, 50 features, depth 1 -> 3), each in
    a fresh process, alternating, ``runs`` of each: td / random median wall time and peak resident
    memory (the whole process)."""
    samples, width = (2000, 64) if cfg.quick else (20000, 256)
    runs: dict[str, list[dict[str, Any]]] = {"td": [], "random": []}
    for repeat in range(cfg.runs):
        for strategy in runs:
            log(f"wide_growth: {strategy}, width {width}, {samples} samples, repeat {repeat + 1}/{cfg.runs}")
            command = [sys.executable, "-c", WIDE_PROBE, strategy, str(samples), str(width), str(cfg.threads or 2)]
            done = subprocess.run(command, capture_output=True, text=True)  # the allocator as a user has it
            if done.returncode != 0:
                raise RuntimeError(f"wide growth probe failed ({strategy}):\n{done.stderr[-2000:]}")
            runs[strategy].append(json.loads(done.stdout.strip().splitlines()[-1]))
    rows = {
        strategy: {
            **probes[0],
            "seconds": statistics.median(p["seconds"] for p in probes),
            "peak_bytes": statistics.median(p["peak_bytes"] for p in probes),
            "all_seconds": [p["seconds"] for p in probes],
        }
        for strategy, probes in runs.items()
    }
    return {
        "samples": samples,
        "width": width,
        "runs": rows,
        "time_ratio": rows["td"]["seconds"] / rows["random"]["seconds"],
        "memory_ratio": rows["td"]["peak_bytes"] / rows["random"]["peak_bytes"],
    }
