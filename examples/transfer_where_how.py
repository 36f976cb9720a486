"""Why does ``td`` lose to random insertions on MNIST 0-4 -> 5-9?  Separate *where* from *how*.

Runs the ``mnist`` transfer benchmark's setting (pretrained ResidualMLP of width 64 and depth 2,
50 target images per class, a fifth held out for early stopping, about 400 Adam steps) with
insertions forced to given locations (``adapt(..., locations=...)``) and initialised by the
topological derivative or at random, and prints the target test accuracy over 3 seeds.

    python examples/transfer_where_how.py [--samples 50] [--seeds 3] [--benchmark mnist]
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from topogrow import adapt
from topogrow.experiments.transfer import BENCHMARKS, TransferConfig, pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="mnist", choices=sorted(BENCHMARKS))
    parser.add_argument("--samples", type=int, default=50, help="target samples (per class for mnist)")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = TransferConfig(args.benchmark, seeds=args.seeds)
    last = [config.depth, config.depth + 1]  # where td inserts: right before the head, twice
    variants = {
        "td (TD location, eigenvectors)": {"strategy": "td"},
        "td, every positive block (rel_threshold=0)": {"strategy": "td", "rel_threshold": 0.0},
        "eigenvectors at the first location": {"strategy": "td", "locations": [0, 0]},
        "random layer at td's location (last)": {"strategy": "random-location", "locations": last},
        "random layer at the first location": {"strategy": "random-location", "locations": [0, 0]},
        "random layer at a random location": {"strategy": "random-location"},
    }
    scores: dict[str, list[float]] = {name: [] for name in variants}
    for seed in range(args.seeds):
        data = BENCHMARKS[args.benchmark].data(seed)
        task = data.source.flattened()
        pretrained = pretrain(data, config, seed)
        (x, y), val = data.draw(args.samples, seed, config.val_fraction)
        flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
        steps_per_epoch = -(-len(x) // config.batch_size)
        epochs = max(1, -(-config.steps // steps_per_epoch))
        test_x, test_y = flat(data.target_test[0]), data.target_test[1]
        for name, options in variants.items():
            result = adapt(
                copy.deepcopy(pretrained),
                (flat(x), y),
                task.loss,
                n_layers=2,
                epochs=epochs,
                lr=config.lr,
                batch_size=config.batch_size,
                val_data=(flat(val[0]), val[1]),
                restore_best=True,
                seed=seed,
                **options,
            )
            with torch.no_grad():
                prediction = result.model.eval()(test_x)
            metric = (
                float(((prediction - test_y) ** 2).mean())
                if task.kind == "regression"
                else float((prediction.argmax(dim=1) == test_y).double().mean())
            )
            scores[name].append(metric)
            print(
                f"seed {seed}  {name:45s} {metric:.4f}  locations {result.locations}  epsilons "
                f"{[round(e, 3) for e in result.epsilons]}",
                flush=True,
            )
    print(f"\n| variant | target test {'MSE' if task.kind == 'regression' else 'accuracy'} (mean ± std) |\n|---|---|")
    for name, values in scores.items():
        print(f"| {name} | {np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.4f} |")


if __name__ == "__main__":
    main()
