"""Section ``matrix_free``: Hessian-vector products and time the Lanczos path of
:mod:`topogrow.core.matrix_free` needs to match the closed-form eigenvalue to 1e-6."""

from __future__ import annotations

import time
from typing import Any

import torch

from topogrow.core import HamiltonianHessian, leading_operator_eigenpairs, states_and_adjoints
from topogrow.core.eigen import leading_block_eigenpairs
from topogrow.core.hamiltonian import hamiltonian_blocks
from topogrow.core.losses import resolve_loss
from topogrow.data import load as load_task
from topogrow.experiments.bench.config import SECTIONS, BenchConfig
from topogrow.experiments.bench.measure import bench_cnn, bench_mlp, log, sync
from topogrow.nn.blocks import ConvBlock, DenseBlock


def _count_products(operator: HamiltonianHessian) -> list[int]:
    """Count Hessian-vector products (one per vector, ``matmat`` columns included)."""
    count = [0]
    matvec, matmat = operator.matvec, operator.matmat

    def counted_matvec(v):
        count[0] += 1
        return matvec(v)

    def counted_matmat(v, chunk: int = 32):
        count[0] += int(torch.as_tensor(v).shape[1])
        return matmat(v, chunk)

    operator.matvec = counted_matvec  # instance attributes: to_scipy() picks them up
    operator.matmat = counted_matmat
    return count


@SECTIONS.register("matrix_free", help="the matrix-free (Lanczos) path against the closed form")
def bench_matrix_free(cfg: BenchConfig) -> list[dict[str, Any]]:
    device = cfg.torch_device
    rows = []
    cases = []
    task = load_task("california", seed=0, data_dir=cfg.data_dir)
    n_dense = 256 if cfg.quick else 2048
    mlp = bench_mlp(16, 2, device)
    cases.append(("dense", "ResidualMLP width 16, last location", mlp, task, n_dense, mlp.depth))
    images = load_task("mnist5k", seed=0, data_dir=cfg.data_dir, n_train=64 if cfg.quick else None)
    cnn = bench_cnn(device)
    cases.append(("conv", "ResidualCNN (8,16), location 0 (8 channels)", cnn, images, 16 if cfg.quick else 256, 0))
    for kind_name, label, model, t, samples, location in cases:
        x, y = t.X_train[:samples].to(device), t.y_train[:samples].to(device)
        _, states, adjoints = states_and_adjoints(model, x, y, resolve_loss(t.loss), scale=1.0)
        state, adjoint = states[location].double(), adjoints[location].double()
        kind = model.insertion_kind(location)
        blocks = hamiltonian_blocks(kind.patches(state), kind.adjoint_rows(adjoint), model.activation_curvature)
        exact = float(leading_block_eigenpairs(blocks).values.max())
        activation = model.new_activation()
        features = state.shape[1]
        block = DenseBlock(features, activation) if kind_name == "dense" else ConvBlock(features, activation)
        row = {"layer": kind_name, "model": label, "samples": samples, "closed_form": exact}
        for tol in (1e-2, 1e-4, 1e-6, 1e-9, 0.0):
            log(f"matrix_free: {kind_name} tol={tol:g}")
            operator = HamiltonianHessian(block, state, adjoint)
            count = _count_products(operator)
            sync(device)
            start = time.perf_counter()
            values, _ = leading_operator_eigenpairs(operator, k=1, tol=tol)
            sync(device)
            seconds = time.perf_counter() - start
            error = abs(float(values[0]) - exact) / abs(exact)
            row.update(parameters=operator.n, tol=tol, products=count[0], seconds=seconds, rel_error=error)
            if error <= 1e-6:
                break
        rows.append(row)
    return rows
