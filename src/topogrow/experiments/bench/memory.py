"""Section ``memory``: peak resident memory of one TD pass for growing S, each in a fresh process."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

import torch

from topogrow.core import topological_derivative
from topogrow.data import load as load_task
from topogrow.experiments.bench.config import SECTIONS, TD_BATCH, BenchConfig
from topogrow.experiments.bench.measure import bench_mlp, log, reset_peak, rss_bytes, status_bytes

MEMORY_PROBE = """
import json, sys
from topogrow.experiments.bench.memory import memory_probe
print(json.dumps(memory_probe(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] or None, int(sys.argv[5]))))
"""


def memory_probe(samples: int, solver: str, device: str, data_dir: str | None, threads: int) -> dict[str, Any]:
    """Run in a fresh process: peak memory of one TD pass on ``samples`` California samples."""
    torch.set_num_threads(threads)
    device = torch.device(device)
    task = load_task("california", seed=0, data_dir=data_dir)
    x = torch.cat([task.X_train, task.X_val, task.X_test])[:samples].to(device)
    y = torch.cat([task.y_train, task.y_val, task.y_test])[:samples].to(device)
    model = bench_mlp(64, 4, device)
    topological_derivative(model, (x[:64], y[:64]), "mse", solver=solver)  # warm up kernels and buffers
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before, measure = torch.cuda.memory_allocated(device), "torch.cuda.max_memory_allocated"
    elif reset_peak():  # the peak so far (loading the data) would hide a smaller TD pass
        before, measure = status_bytes("VmRSS"), "VmHWM after clear_refs"
    else:
        before, measure = rss_bytes(), "ru_maxrss"
    start = time.perf_counter()
    topological_derivative(model, (x, y), "mse", batch_size=TD_BATCH, solver=solver)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = status_bytes("VmHWM") if measure.startswith("VmHWM") else rss_bytes()
    return {
        "samples": int(x.shape[0]),
        "solver": solver,
        "peak_bytes": peak,
        "td_extra_bytes": peak - before,
        "td_s": seconds,
        "measure": measure,
    }


@SECTIONS.register("memory", help="peak memory of one TD pass against the number of samples S")
def bench_memory(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Peak memory of one TD pass per (solver, S), each in a fresh process.

    The full run starts the processes one after another; a quick run starts them
    together (memory is per process, and the timings recorded are not the point here).
    """
    threads = cfg.threads or torch.get_num_threads()
    jobs = [
        (solver, samples)
        for solver in ("blocks", "iterative")
        for samples in ((256, 1024) if cfg.quick else (2000, 8000, 20000))
    ]

    def start(solver: str, samples: int) -> subprocess.Popen:
        log(f"memory: S={samples} solver={solver}")
        command = [sys.executable, "-c", MEMORY_PROBE, str(samples), solver, str(cfg.torch_device)]
        command += [cfg.data_dir or "", str(threads)]
        # freed tensors go back to the OS at once: else glibc keeps them in its arenas and the
        # high-water mark creeps up with the number of batches (measured: 57, 73, 101 MB for 2k, 8k, 20k)
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def finish(process: subprocess.Popen, solver: str, samples: int) -> dict[str, Any]:
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"memory probe failed (S={samples}, {solver}):\n{err[-2000:]}")
        return json.loads(out.strip().splitlines()[-1])

    if cfg.quick:
        processes = [(start(*job), *job) for job in jobs]
        return [finish(*p) for p in processes]
    return [finish(start(*job), *job) for job in jobs]
