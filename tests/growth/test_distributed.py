"""Distributed growth (topogrow.growth.distributed_run): the reduce hook and a single process in-process,
and a 2-process torchrun run. The helpers themselves: tests/training/test_distributed_helpers.py.

The torchrun test runs ``examples/ddp_grow.py`` twice: on 2 CPU processes (gloo), each with
half of the data, and as one process on all of it. Each process trains full-batch on its
shard, and DistributedDataParallel averages the two shards' mean gradients, which is the
full-data mean gradient when the shards are equal; so the two runs take the same steps and
differ only by rounding (float32 sums in another order). Asserted:

- the two processes made the same decisions (locations, epsilons, eigenvalues) and ended
  with bit-identical parameters;
- the topological derivative before training, summed over the processes, equals the
  single-process one on all the data (relative 1e-6; float32 states, float64 blocks);
- the growth runs agree: same locations, epsilons and eigenvalues at every stage to 1e-5
  relative, training losses and final parameters to 1e-4 (Adam amplifies rounding a little);
- only process 0's checkpoints exist and the last one loads;
- shards with different numbers of batches per epoch stop both processes with a clear error
  instead of hanging.

A third run feeds a DataLoader with a DistributedSampler (mini-batches of 64) and checks that
the processes still agree bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from topogrow import Grower, GrowthConfig, ResidualMLP, topological_derivative
from topogrow.growth import read_checkpoint

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ddp_grow.py"


# ----------------------------------------------------------------- in-process
@pytest.mark.parametrize("solver", ["blocks", "iterative"])
def test_reduce_hook_sums_blocks_counts_and_products(solver):
    """``reduce`` as if two processes held the same data: the same derivative over 2S samples."""
    torch.manual_seed(1)
    model = ResidualMLP(4, width=6, depth=2, out_features=1)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    calls = []

    def twice(tensor):
        calls.append(tuple(tensor.shape))
        assert tensor.dtype == torch.float64
        return 2 * tensor

    plain = topological_derivative(model, (x, y), "mse", solver=solver, batch_size=16)
    doubled = topological_derivative(model, (x, y), "mse", solver=solver, batch_size=16, reduce=twice)
    assert doubled.n_samples == 2 * plain.n_samples
    assert doubled.loss == pytest.approx(plain.loss, rel=1e-12)
    torch.testing.assert_close(doubled.eigenvalues, plain.eigenvalues, rtol=1e-6, atol=1e-10)
    assert (2,) in calls  # sample count and loss sum
    assert len(calls) >= 1 + plain.n_locations  # and each location's blocks or products


def test_grower_is_single_process_without_a_process_group():
    model = ResidualMLP(3, width=4, depth=1, out_features=1)
    grower = Grower(model, "mse", GrowthConfig(max_depth=2, epochs_per_stage=1, final_epochs=0, device="cpu"))
    grower.fit((torch.randn(32, 3), torch.randn(32, 1)))
    assert grower.distributed is False and grower.distributed_run.wrapper is None and model.depth == 2


# ------------------------------------------------------------------ 2 processes
def _torchrun_available() -> str | None:
    if not dist.is_available():
        return "torch.distributed is not available in this build"
    if not dist.is_gloo_available():
        return "the gloo backend is not available"
    try:
        import torch.distributed.run  # noqa: F401
    except ImportError as error:  # pragma: no cover
        return f"torch.distributed.run cannot be imported ({error})"
    return None


needs_torchrun = pytest.mark.skipif(_torchrun_available() is not None, reason=str(_torchrun_available()))


def _run(args: list[str], nproc: int | None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launcher = [sys.executable]
    if nproc is not None:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run(
        [*launcher, str(EXAMPLE), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _records(folder: Path, world: int) -> list[dict]:
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.mark.slow
@needs_torchrun
def test_two_processes_grow_like_one(tmp_path):
    common = ["--samples", "512", "--max-depth", "3", "--epochs-per-stage", "5", "--final-epochs", "3"]
    run = _run([*common, "--out", str(tmp_path / "ddp"), "--checkpoint-dir", str(tmp_path / "ckpt")], nproc=2)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    single = _run([*common, "--out", str(tmp_path / "single")], nproc=None)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    rank0, rank1 = _records(tmp_path / "ddp", 2)
    (one,) = _records(tmp_path / "single", 1)

    # the two processes agree exactly
    assert (rank0["world_size"], rank0["shard_samples"], rank1["shard_samples"]) == (2, 256, 256)
    assert rank0["stages"] == rank1["stages"]
    assert rank0["parameters_sha256"] == rank1["parameters_sha256"]
    assert rank0["train_losses"] == rank1["train_losses"]
    inserted = [s for s in rank0["stages"] if s["location"] is not None]
    assert len(inserted) == 2 and rank0["final_depth"] == 3

    # before training: the summed shards' derivative is the full-data one
    assert rank0["initial_n_samples"] == one["initial_n_samples"] == 512
    assert rank0["initial_loss"] == pytest.approx(one["initial_loss"], rel=1e-6)
    mu_ddp, mu_one = torch.tensor(rank0["initial_eigenvalues"]), torch.tensor(one["initial_eigenvalues"])
    torch.testing.assert_close(mu_ddp, mu_one, rtol=1e-6, atol=1e-9)
    assert int(mu_ddp.argmax()) == int(mu_one.argmax())

    # the growth runs: same decisions, same numbers up to rounding
    assert [s["location"] for s in rank0["stages"]] == [s["location"] for s in one["stages"]]
    # (the model line search refines epsilon from losses: equal up to their rounding, as the losses below)
    epsilons = [(s["epsilon"], t["epsilon"]) for s, t in zip(rank0["stages"], one["stages"], strict=True)]
    assert all(ours == theirs or ours == pytest.approx(theirs, rel=1e-4) for ours, theirs in epsilons)
    for ours, theirs in zip(rank0["stages"], one["stages"], strict=True):
        if theirs["eigenvalues"] is not None:
            torch.testing.assert_close(
                torch.tensor(ours["eigenvalues"]), torch.tensor(theirs["eigenvalues"]), rtol=1e-5, atol=1e-9
            )
    torch.testing.assert_close(
        torch.tensor(rank0["train_losses"]), torch.tensor(one["train_losses"]), rtol=1e-4, atol=0
    )
    torch.testing.assert_close(torch.tensor(rank0["parameters"]), torch.tensor(one["parameters"]), rtol=0, atol=1e-4)

    # process 0 wrote the checkpoints; the newest is the finished run
    checkpoint = read_checkpoint(tmp_path / "ckpt")
    assert checkpoint.model.depth == 3 and checkpoint.progress["phase"] == "done"
    assert not list((tmp_path / "ckpt").glob("*.tmp"))


@pytest.mark.slow
@needs_torchrun
def test_unequal_batch_counts_fail_on_every_process(tmp_path):
    """257 and 256 samples in batches of 128: 3 and 2 batches; DDP would hang, we raise."""
    run = _run(["--samples", "513", "--batch-size", "128", "--out", str(tmp_path)], nproc=2, timeout=90)
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "same number of batches per epoch" in output
    assert "rank 0" in output and "rank 1" in output


@pytest.mark.slow
@needs_torchrun
def test_two_processes_with_a_distributed_sampler_agree(tmp_path):
    """A DataLoader with a DistributedSampler (reshuffled each epoch by the grower): mini-batches of 64."""
    run = _run(["--loader", "--batch-size", "64", "--out", str(tmp_path)], nproc=2)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rank0, rank1 = _records(tmp_path, 2)
    assert rank0["stages"] == rank1["stages"] and rank0["train_losses"] == rank1["train_losses"]
    assert rank0["parameters_sha256"] == rank1["parameters_sha256"]
    assert rank0["final_depth"] == 3 and rank0["initial_n_samples"] == 512
