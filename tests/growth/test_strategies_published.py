"""Published baselines as strategies: forward-thinking (Hettinger et al. 2017) and sensli
(layer insertion by first-order sensitivity, Kreis et al. 2023)."""

import copy
import json
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

import helpers
from topogrow import Grower, GrowthConfig, ResidualCNN, ResidualMLP, ViT
from topogrow.cli import main
from topogrow.growth import STRATEGIES, Callback, Freeze, StageContext
from topogrow.growth import checkpoint as ckpt
from topogrow.growth.strategies import Sensli, make_strategy
from topogrow.nn.blocks import ResidualBlock, SensliConv, SensliMLP

regression_data = helpers.regression_data
config = helpers.short_growth_config


def small_model(depth=1, seed=0):
    torch.manual_seed(seed)
    return ResidualMLP(4, 6, depth, 1).double()


class Recorder(Callback):
    """Keeps the outputs right before and after each insertion, and the weights after it."""

    def __init__(self):
        self.inserted = []
        self.probe = regression_data(16, seed=9)[0]

    def _output(self, model):
        with torch.no_grad():
            return model(self.probe.to(next(model.parameters()).dtype))

    def on_stage_end(self, grower, context):
        self.before = self._output(grower.model)

    def on_insert(self, grower, insertion):
        snapshot = {k: v.clone() for k, v in grower.model.state_dict().items()}
        self.inserted.append((insertion.proposal, self.before, self._output(grower.model), snapshot))


@pytest.mark.slow
def test_both_are_registered_and_documented_in_the_cli():
    assert {"forward-thinking", "sensli"} <= set(STRATEGIES)
    for name in ("forward-thinking", "sensli"):
        assert GrowthConfig(strategy=name).strategy == name
    assert any(isinstance(c, Freeze) for c in make_strategy("forward-thinking").callbacks())
    out = subprocess.run(
        [sys.executable, "-m", "topogrow.cli", "compare", "--help"], capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(out.split())
    assert "forward-thinking (" in flat and "Hettinger" in flat
    assert "sensli (" in flat and "Kreis" in flat


# ------------------------------------------------------------ forward-thinking
def test_forward_thinking_appends_before_the_head_and_freezes_the_earlier_layers():
    train, val = regression_data(160, seed=1), regression_data(60, seed=2)
    initial = small_model()
    start = {k: v.clone() for k, v in initial.state_dict().items()}
    recorder = Recorder()
    grower = Grower(initial, "mse", config(strategy="forward-thinking", max_depth=4), callbacks=[recorder])
    history = grower.fit(train, val)
    model = grower.model
    assert model.depth == 4 and len(history.insertions) == 3
    for record in history.insertions:
        assert record.location == record.depth  # the last location: right before the head
        assert record.epsilon == 1.0 and record.eigenvalues is None
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layers.3.affine.weight", "layers.3.affine.bias", "head.weight", "head.bias"}
    (freeze,) = [c for c in grower.callbacks if isinstance(c, Freeze)]
    assert set(freeze.state_dict()["trainable"]) == trainable
    final = model.state_dict()
    # the initial network trained in stage 0 (nothing frozen before the first insertion)
    assert not torch.equal(final["stem.0.weight"], start["stem.0.weight"])
    for index, (proposal, before, after, snapshot) in enumerate(recorder.inserted):
        new = f"layers.{proposal.location}."
        assert proposal.location == index + 1
        assert not torch.equal(before, after)  # a random layer, inserted as drawn
        assert snapshot[new + "affine.weight"].abs().max() > 0
        for name, value in snapshot.items():
            if name.startswith("head.") or (index == len(recorder.inserted) - 1 and name.startswith(new)):
                continue
            if name.startswith(new) or name.startswith("layers.") and int(name.split(".")[1]) > proposal.location:
                continue  # trained in a later stage
            assert torch.equal(final[name], value), f"{name} changed after insertion {index + 1}"
    last, _, _, snapshot = recorder.inserted[-1]
    new = f"layers.{last.location}."
    for name in ("head.weight", new + "affine.weight", new + "affine.bias"):
        assert not torch.equal(final[name], snapshot[name]), f"{name} did not train"
    # Adam still holds every parameter (frozen ones get no gradient, so no step)
    held = {id(p) for group in grower.optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("strategy", ["forward-thinking", "sensli"])
def test_resuming_reproduces_the_run(strategy, tmp_path):
    train, val = regression_data(120, seed=1, dtype=torch.float32), regression_data(40, seed=2, dtype=torch.float32)
    cfg = config(strategy=strategy, td_batch_size=50)
    torch.manual_seed(0)
    reference = Grower(ResidualMLP(4, 6, 1, 1), "mse", cfg)
    history = reference.fit(train, val, checkpoint_dir=tmp_path / "all", checkpoint_every=1, keep_checkpoints=1000)
    everything = ckpt._complete(tmp_path / "all")
    frozen = {n for n, p in reference.model.named_parameters() if not p.requires_grad}
    assert bool(frozen) == (strategy == "forward-thinking")
    if strategy == "sensli":
        assert reference.model.spec()["blocks"] == [None, "sensli-mlp", "sensli-mlp"]
    for checkpoint in everything[1::3]:  # a sample: grow and final phases, before and after insertions
        resumed = Grower.from_checkpoint(checkpoint)
        result = resumed.fit(train, val)
        strip = [{k: v for k, v in s.items() if k != "wall_time"} for s in result.to_dict()["stages"]]
        assert strip == [{k: v for k, v in s.items() if k != "wall_time"} for s in history.to_dict()["stages"]]
        assert [e.train_loss for e in result.epochs] == [e.train_loss for e in history.epochs]
        assert {n for n, p in resumed.model.named_parameters() if not p.requires_grad} == frozen
        for (name, a), b in zip(resumed.model.state_dict().items(), reference.model.state_dict().values(), strict=True):
            assert torch.equal(a, b), (checkpoint.name, name)


# ---------------------------------------------------------------------- sensli
def autograd_sensitivity(model, candidate, location, x, y, loss):
    """||dJ/dW2|| of ``candidate`` (W2 = 0) inserted at ``location`` of a copy of ``model``, by autograd."""
    grown = copy.deepcopy(model)
    block = grown.insert_block(location, ResidualBlock(copy.deepcopy(candidate)))
    value = loss(grown(x), y)
    (grad,) = torch.autograd.grad(value, block.block.output_weight)
    return grad


def classification_setup(kind):
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    if kind == "cnn":
        x = torch.randn(30, 1, 6, 6, generator=g, dtype=torch.float64)
        model = ResidualCNN(1, channels=(3, 4), depths=(1, 1), out_features=2).double()
    else:
        x = torch.randn(30, 1, 8, 8, generator=g, dtype=torch.float64)
        model = ViT(image_size=8, patch_size=4, in_channels=1, dim=8, depth=1, heads=2, out_features=2).double()
    y = torch.randint(0, 2, (30,), generator=g)
    return model, x, y, F.cross_entropy


@pytest.mark.parametrize("kind", ["mlp", "cnn", "vit"])
def test_sensli_picks_the_largest_autograd_gradient_norm_of_a_zero_output_block(kind):
    if kind == "mlp":
        model = small_model(depth=2)
        with torch.no_grad():  # a layer that is not zero, so that the locations differ
            model.layers[0].affine.weight.normal_(0, 0.5)
        (x, y), loss = regression_data(40, seed=4), F.mse_loss
    else:
        model, x, y, loss = classification_setup(kind)
    strategy = Sensli()
    candidates = strategy.candidates(model, torch.Generator().manual_seed(7))
    assert len(candidates) == len(model.locations)
    expected_class = SensliConv if kind == "cnn" else SensliMLP
    assert all(
        type(c) is expected_class and torch.equal(c.output_weight, torch.zeros_like(c.output_weight))
        for c in candidates
    )
    context = StageContext(model, (x, y), loss, config(td_batch_size=7), torch.Generator().manual_seed(7))
    streamed = strategy.gradients(context, candidates)  # batches of 7: 7 does not divide 40 or 30
    norms = []
    for location, candidate in enumerate(candidates):
        exact = autograd_sensitivity(model, candidate, location, x, y, loss)
        torch.testing.assert_close(streamed[location], exact, rtol=1e-10, atol=1e-13)
        norms.append(float(exact.norm()))
    assert len(set(norms)) == len(norms)
    proposal = strategy.propose(context)
    assert proposal.location == max(range(len(norms)), key=norms.__getitem__)
    assert proposal.block == ("sensli-conv" if kind == "cnn" else "sensli-mlp")
    assert proposal.line_search is False and proposal.predicted_change(1.0) == 0.0
    chosen = candidates[proposal.location]
    torch.testing.assert_close(proposal.direction, torch.nn.utils.parameters_to_vector(chosen.parameters()).double())
    # inserting the proposal as the grower does leaves the function exactly unchanged
    grown = copy.deepcopy(model)
    block = make_candidate_copy(chosen)
    grown.insert_block(proposal.location, ResidualBlock(block)).load_direction(proposal.direction)
    assert torch.equal(grown(x), model(x))
    assert block.fc1.weight.abs().max() > 0 and torch.equal(block.output_weight, torch.zeros_like(block.output_weight))


def make_candidate_copy(candidate):
    block = copy.deepcopy(candidate)
    with torch.no_grad():
        for p in block.parameters():
            p.fill_(float("nan"))  # every value must come from the direction
    return block


def test_sensli_grows_through_the_grower_preserving_the_function_at_each_insertion():
    train, val = regression_data(160, seed=1), regression_data(60, seed=2)
    recorder = Recorder()
    grower = Grower(
        small_model(), "mse", config(strategy="sensli", max_depth=4, td_batch_size=64), callbacks=[recorder]
    )
    history = grower.fit(train, val)
    assert grower.model.depth == 4 and len(history.insertions) == 3
    for record, (proposal, before, after, snapshot) in zip(history.insertions, recorder.inserted, strict=True):
        assert record.location == proposal.location and record.epsilon == 1.0
        assert record.actual_change == 0.0 and record.predicted_change == 0.0
        assert torch.equal(before, after)  # W2 = 0: exactly function preserving
        prefix = f"layers.{proposal.location}.block."
        assert torch.equal(snapshot[prefix + "fc2.weight"], torch.zeros(6, 6, dtype=torch.float64))
        assert snapshot[prefix + "fc1.weight"].abs().max() > 0
    blocks = [layer for layer in grower.model.layers if isinstance(layer, ResidualBlock)]
    assert len(blocks) == 3 and all(b.name == "sensli-mlp" for b in blocks)
    assert all(b.block.output_weight.abs().max() > 0 for b in blocks)  # W2 trains away from zero
    assert all(p.requires_grad for p in grower.model.parameters())
    rebuilt = ResidualMLP(**grower.model.spec()).double()
    rebuilt.load_state_dict(grower.model.state_dict())
    assert torch.equal(rebuilt(val[0]), grower.model(val[0]))


def test_sensli_names_a_model_it_cannot_grow():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(4, 1)

        def forward(self, x):
            return self.head(x)

    with pytest.raises(TypeError, match="strategy 'sensli' .* Plain has no forward_states"):
        Grower(Plain(), "mse", config(strategy="sensli"))


# --------------------------------------------------------------------- compare
def test_compare_runs_td_forward_thinking_and_sensli(tmp_path, capsys):
    argv = ["compare", "synthetic", "--seeds", "1", "--strategies", "td,forward-thinking,sensli"]
    argv += ["--width", "8", "--epochs-per-stage", "1", "--final-epochs", "1", "--max-depth", "3", "--quiet"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("td", "forward-thinking", "sensli"):
        assert f"| {name} |" in out
    runs = {r["strategy"]: r for r in json.loads((tmp_path / "compare.json").read_text())["runs"]}
    assert set(runs) == {"td", "forward-thinking", "sensli"}
    ft = [s["location"] for s in runs["forward-thinking"]["history"]["stages"] if s["location"] is not None]
    assert ft == [1, 2]
    assert runs["sensli"]["spec"]["blocks"].count("sensli-mlp") == 2
