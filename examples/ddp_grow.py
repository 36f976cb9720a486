"""Grow a residual MLP over several processes with torch.distributed (DistributedDataParallel).

Launch two CPU processes (gloo)::

    OMP_NUM_THREADS=1 .venv/bin/python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        examples/ddp_grow.py --out results/ddp

or run it as one process on all the data, for comparison::

    .venv/bin/python examples/ddp_grow.py --out results/single

Each process takes its contiguous shard of the same synthetic data set and trains full-batch
on it by default (the batch is the shard), so that the distributed run takes the same steps
as the single-process one, up to rounding. Process 0 writes ``summary.json`` (and the
checkpoints, with ``--checkpoint-dir``); every process writes ``rank<r>.json`` (what it
decided, its eigenvalues and final parameters) so that the processes can be compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from topogrow import Grower, GrowthConfig, ResidualMLP, topological_derivative
from topogrow.training import distributed


def make_data(samples: int, features: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth regression problem that a deeper network fits better."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=generator)
    w = torch.randn(features, 2, generator=generator)
    z = x @ w
    y = torch.sin(2 * z[:, :1]) * torch.cos(z[:, 1:]) + 0.05 * torch.randn(samples, 1, generator=generator)
    return x, y


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for summary.json and rank<r>.json")
    parser.add_argument("--samples", type=int, default=512, help="samples in all (split over the processes)")
    parser.add_argument("--features", type=int, default=6)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--max-depth", type=int, default=3)
    parser.add_argument("--epochs-per-stage", type=int, default=5)
    parser.add_argument("--final-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="per process (default: its whole shard)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument(
        "--loader",
        action="store_true",
        help="feed a DataLoader with a DistributedSampler over all the data instead of (X, y) shards",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    distributed.init_process_group()  # gloo on CPU, nccl with CUDA; nothing without torchrun
    rank, world = distributed.rank(), distributed.world_size()
    x, y = make_data(args.samples, args.features, args.seed)
    x_shard, y_shard = distributed.shard(x, y)  # the whole set when world == 1
    torch.manual_seed(args.seed)
    model = ResidualMLP(args.features, width=args.width, depth=1, out_features=1)
    reduce = distributed.all_reduce_sum if distributed.is_distributed() else None

    # The topological derivative before any training: the blocks are sums over samples, so
    # the sum of the shards' blocks is the single-process one.
    td = topological_derivative(model, (x_shard, y_shard), "mse", reduce=reduce)

    batch = args.batch_size or x_shard.shape[0]
    config = GrowthConfig(
        strategy="td",
        max_depth=args.max_depth,
        epochs_per_stage=args.epochs_per_stage,
        final_epochs=args.final_epochs,
        batch_size=batch,
        lr=args.lr,
        seed=args.seed,
        device="cpu",
    )
    train = (x_shard, y_shard)
    if args.loader:  # each process draws its part of a fresh shuffle every epoch (padded to equal parts)
        dataset = TensorDataset(x, y)
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
        train = DataLoader(dataset, batch_size=batch, sampler=sampler)
    grower = Grower(model, "mse", config)
    history = grower.fit(train, checkpoint_dir=args.checkpoint_dir)

    parameters = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    record = {
        "rank": rank,
        "world_size": world,
        "shard_samples": int(x_shard.shape[0]),
        "initial_eigenvalues": td.eigenvalues.tolist(),
        "initial_loss": td.loss,
        "initial_n_samples": td.n_samples,
        "stages": [
            {"location": s.location, "epsilon": s.epsilon, "eigenvalues": s.eigenvalues, "depth": s.depth}
            for s in history.stages
        ],
        "train_losses": [e.train_loss for e in history.epochs],
        "final_depth": model.depth,
        "parameters": parameters.tolist(),
        "parameters_sha256": hashlib.sha256(parameters.numpy().tobytes()).hexdigest(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rank{rank}.json").write_text(json.dumps(record, indent=1))
    if distributed.is_main_process():
        (args.out / "summary.json").write_text(json.dumps(history.to_dict(), indent=1))
        print(history.summary())
    distributed.barrier()
    if distributed.is_distributed():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
