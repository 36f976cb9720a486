"""Section ``block_vs_dense``: the block-diagonal solver against a dense eigendecomposition, then
the blocks and the iterative solvers alone across widths, with the memory each would take."""

from __future__ import annotations

from typing import Any

import torch

from topogrow.core import states_and_adjoints, topological_derivative
from topogrow.core.hamiltonian import hamiltonian_blocks
from topogrow.core.losses import resolve_loss
from topogrow.core.topological_derivative import choose_solver, solver_costs
from topogrow.data import load as load_task
from topogrow.experiments.bench.config import SECTIONS, BenchConfig
from topogrow.experiments.bench.measure import bench_mlp, log, timed
from topogrow.nn import ResidualMLP

SCALING_SAMPLES = 2048


def _location_data(width: int, samples: int, device: torch.device, data_dir: str | None):
    task = load_task("california", seed=0, data_dir=data_dir)
    x, y = task.X_train[:samples].to(device), task.y_train[:samples].to(device)
    return bench_mlp(width, 0, device, seed=width), (x, y)


def _dense_reference(model: ResidualMLP, data) -> tuple[float, float]:
    """The naive path: blocks, then the dense ``n(n+1) x n(n+1)`` matrix, then one ``eigh``.

    Returns ``(leading eigenvalue, dense memory in bytes)``."""
    x, y = data
    _, states, adjoints = states_and_adjoints(model, x, y, resolve_loss("mse"), scale=1.0)
    kind = model.insertion_kind(0)
    blocks = hamiltonian_blocks(kind.patches(states[0]), kind.adjoint_rows(adjoints[0]), model.activation_curvature)
    dense = torch.block_diag(*blocks.double())
    dense = 0.5 * (dense + dense.T)
    values, _ = torch.linalg.eigh(dense)
    return float(values[-1]), dense.numel() * dense.element_size()


@SECTIONS.register("block_vs_dense", help="the block eigen-solver against a dense eigh, and across widths")
def bench_block_vs_dense(cfg: BenchConfig) -> dict[str, list[dict[str, Any]]]:
    device = cfg.torch_device
    samples = 512 if cfg.quick else SCALING_SAMPLES
    dense_rows = []
    for width in (8, 16) if cfg.quick else (16, 32, 64):
        log(f"block_vs_dense: width {width}")
        model, data = _location_data(width, samples, device, cfg.data_dir)
        block_s, _, td = timed(
            lambda model=model, data=data: topological_derivative(model, data, "mse", solver="blocks"),
            cfg.runs,
            device,
        )
        dense_s, _, (dense_top, dense_bytes) = timed(
            lambda model=model, data=data: _dense_reference(model, data), cfg.runs, device, budget_s=30.0
        )
        block_top = float(td.eigenvalues[0])
        dense_rows.append(
            {
                "width": width,
                "samples": samples,
                "block_s": block_s,
                "dense_s": dense_s,
                "speedup": dense_s / block_s,
                "dense_bytes": dense_bytes,
                "agreement": abs(block_top - dense_top) / max(abs(dense_top), 1e-300),
            }
        )
    scaling = []
    widths = (32, 64) if cfg.quick else (128, 256, 512, 1024)
    blocks_limit = 64 if cfg.quick else 512  # beyond, the blocks take minutes and gigabytes
    for width in widths:
        model, data = _location_data(width, samples, device, cfg.data_dir)
        m = width + 1
        row: dict[str, Any] = {
            "width": width,
            "samples": samples,
            "auto": choose_solver(width, m, 1, samples),
            "dense_bytes": (width * m) ** 2 * 8,
            "blocks_bytes": width * m * m * 8,
            "iterative_bytes": iterative_bytes(width, m, samples),
            "costs": solver_costs(width, m, 1, samples),
        }
        log(f"width_scaling: width {width} iterative")
        row["iterative_s"], _, iterative = timed(
            lambda model=model, data=data: topological_derivative(model, data, "mse", solver="iterative"),
            cfg.runs,
            device,
        )
        row["products"] = iterative.products[0]
        if width <= blocks_limit:
            log(f"width_scaling: width {width} blocks")
            row["blocks_s"], _, blocks = timed(
                lambda model=model, data=data: topological_derivative(model, data, "mse", solver="blocks"),
                cfg.runs,
                device,
            )
            exact, approx = blocks.block_eigenvalues[0], iterative.block_eigenvalues[0]
            row["max_rel_error_top"] = abs(float(exact.max() - approx.max())) / abs(float(exact.max()))
            row["max_abs_error_over_top"] = float((exact - approx).abs().max()) / float(exact.abs().max())
        else:
            row["blocks_s"] = None
        row["fast_s"] = row["iterative_s"] if row["auto"] == "iterative" else row["blocks_s"]
        scaling.append(row)
    return {"dense": dense_rows, "scaling": scaling}


def iterative_bytes(n: int, m: int, samples: int, basis: int = 64) -> int:
    """Memory of the iterative solver at one dense location: the cached patches and adjoint
    rows (``S (m + n)`` float64) and the Lanczos basis (``n (basis + 1) m`` float64)."""
    return 8 * (samples * (m + n) + n * (min(basis, m) + 1) * m)
