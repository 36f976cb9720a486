"""Extending the growth loop: callbacks, registered strategies and schedules, optimisers, and the
the user guide's "Extending topogrow" examples (docs/user-guide.md), run as written."""

import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import helpers
from topogrow import Callback, Grower, GrowthConfig, Proposal, ResidualMLP, Strategy, register_strategy
from topogrow.cli import main
from topogrow.growth import SCHEDULES, STRATEGIES, JSONLinesLogger, register_schedule
from topogrow.growth.schedules import FixedEpochs
from topogrow.growth.strategies import growth_strategies, random_init

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "user-guide.md"
config = helpers.short_growth_config


def data(n=120, seed=1):
    return helpers.regression_data(n, seed)


def small_model():
    torch.manual_seed(0)
    return ResidualMLP(4, 6, 1, 1).double()


class Count(Callback):
    """Counts the hooks and records each insertion's epsilon and location."""

    def __init__(self):
        self.calls = {"fit_start": 0, "epoch_end": 0, "stage_end": 0, "insert": 0, "fit_end": 0}
        self.epsilons, self.locations = [], []

    def on_fit_start(self, grower):
        self.calls["fit_start"] += 1

    def on_epoch_end(self, grower, record):
        self.calls["epoch_end"] += 1

    def on_stage_end(self, grower, context):
        self.calls["stage_end"] += 1

    def on_insert(self, grower, insertion):
        self.calls["insert"] += 1
        self.epsilons.append(insertion.epsilon)
        self.locations.append(insertion.location)

    def on_fit_end(self, grower):
        self.calls["fit_end"] += 1

    def state_dict(self):
        return {"calls": self.calls, "epsilons": self.epsilons, "locations": self.locations}

    def load_state_dict(self, state):
        self.calls, self.epsilons, self.locations = state["calls"], state["epsilons"], state["locations"]


@dataclass(frozen=True)
class LastLocation(Strategy):
    """A user's strategy: a random layer at 0.1 x PyTorch's scale, always right before the head."""

    name: str = "last-small"

    def propose(self, context):
        location = context.model.locations[-1]
        return Proposal(location, 0.1 * random_init(context.model, location, context.generator), epsilon=1.0)


@pytest.fixture
def last_small():
    register_strategy("last-small", LastLocation, help="a small random layer before the head (test)")
    yield "last-small"
    STRATEGIES.unregister("last-small")


def test_a_callback_sees_every_hook_and_records_each_insertion():
    count = Count()
    history = Grower(small_model(), "mse", config(max_depth=3), callbacks=[count]).fit(data(), data(40, 2))
    assert count.calls == {"fit_start": 1, "epoch_end": 3 * 2 + 2, "stage_end": 3, "insert": 2, "fit_end": 1}
    assert count.epsilons == [s.epsilon for s in history.insertions]
    assert count.locations == [s.location for s in history.insertions]


def test_the_json_lines_logger_writes_every_epoch_and_insertion(tmp_path):
    path = tmp_path / "logs" / "run.jsonl"
    history = Grower(small_model(), "mse", config(max_depth=3), callbacks=[JSONLinesLogger(path)]).fit(data())
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    epochs = [e for e in entries if e["event"] == "epoch"]
    inserts = [e for e in entries if e["event"] == "insert"]
    assert [e["train_loss"] for e in epochs] == [e.train_loss for e in history.epochs]
    assert [(e["location"], e["epsilon"], e["depth"]) for e in inserts] == [
        (s.location, s.epsilon, s.depth + 1) for s in history.insertions
    ]
    assert entries[-1] == {
        "event": "end",
        "depth": 3,
        "epochs": len(history.epochs),
        "stop_reason": history.stop_reason,
    }


def test_callbacks_must_be_callbacks():
    with pytest.raises(TypeError, match="callbacks must be topogrow.growth.Callback objects, got function"):
        Grower(small_model(), "mse", config(), callbacks=[lambda grower: None])


def test_a_registered_strategy_grows_through_the_grower_and_compare(last_small, tmp_path, capsys):
    assert last_small in growth_strategies() and GrowthConfig(strategy=last_small).strategy == last_small
    count, scales = Count(), []

    class Scale(Callback):
        def on_insert(self, grower, insertion):
            scales.append(float(insertion.layer.affine.weight.detach().abs().max()))

    grower = Grower(small_model(), "mse", config(strategy=last_small, max_depth=3), callbacks=[count, Scale()])
    history = grower.fit(data())
    assert [s.location for s in history.insertions] == [1, 2] == count.locations
    assert count.epsilons == [1.0, 1.0]
    assert all(0 < scale <= 0.1 / 6**0.5 for scale in scales)  # 0.1 x uniform(+-1/sqrt(fan_in = 6))
    out = tmp_path / "compare"
    argv = ["compare", "synthetic", "--seeds", "1", "--strategies", f"td,{last_small}", "--width", "6"]
    argv += ["--epochs-per-stage", "1", "--final-epochs", "1", "--max-depth", "2", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    runs = json.loads((out / "compare.json").read_text())["runs"]
    assert [r["strategy"] for r in runs] == ["td", last_small] and runs[1]["final_depth"] == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert f"{last_small} (a small random layer before the head (test))" in " ".join(capsys.readouterr().out.split())


def test_a_plugin_module_registers_a_strategy_for_the_command_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_growth_plugin.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from topogrow import Proposal, Strategy, register_strategy

            @register_strategy("plugin-zero", help="a zero layer at location 0 (plugin)")
            @dataclass(frozen=True)
            class PluginZero(Strategy):
                name: str = "plugin-zero"

                def propose(self, context):
                    return Proposal(0, 0 * context.topological_derivative().direction(0), 0.0, epsilon=1.0)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        out = tmp_path / "run"
        argv = ["--plugin", "my_growth_plugin", "run", "synthetic", "--strategy", "plugin-zero", "--width", "6"]
        argv += ["--epochs-per-stage", "1", "--final-epochs", "0", "--max-depth", "2", "--quiet", "--out", str(out)]
        assert main(argv) == 0
        run = json.loads((out / "run.json").read_text())["run"]
        assert run["final_depth"] == 2 and run["history"]["stages"][0]["location"] == 0
    finally:
        STRATEGIES.unregister("plugin-zero")


def test_a_missing_plugin_is_one_line_with_exit_code_2(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--plugin", "no_such_plugin_module", "compare", "--help"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "topogrow: error: --plugin cannot import 'no_such_plugin_module' (No module named 'no_such_plugin_module')"
    )


def test_on_stage_end_can_stop_veto_or_replace_the_proposal():
    class Steer(Callback):
        def on_stage_end(self, grower, context):
            if context.record.stage == 0:
                context.veto("not yet")
            elif context.record.stage == 1:
                proposal = context.proposal  # the strategy's (td), asked here
                context.proposal = Proposal(0, torch.zeros_like(proposal.direction), 0.0, epsilon=1.0)
            else:
                context.stop("enough")

    history = Grower(small_model(), "mse", config(max_depth=5), callbacks=[Steer()]).fit(data())
    assert history.stages[0].location is None and history.stages[0].note == "insertion vetoed: not yet"
    assert history.stages[1].location == 0 and history.stages[1].eigenvalues is not None
    assert history.stop_reason == "enough" and len(history.stages) == 3 and len(history.insertions) == 1


def test_a_callback_state_is_checkpointed_and_restored(tmp_path):
    train = helpers.regression_data(120, 1, dtype=torch.float32)
    torch.manual_seed(0)
    whole = Count()
    Grower(ResidualMLP(4, 6, 1, 1), "mse", config(), callbacks=[whole]).fit(
        train, checkpoint_dir=tmp_path, checkpoint_every=1, keep_checkpoints=100
    )
    middle = sorted(tmp_path.glob("ckpt-*"))[3]
    saved = json.loads((middle / "trainer.json").read_text())["callbacks"]
    assert saved["Count"]["calls"]["epoch_end"] >= 1 and "StopRules" in saved
    resumed = Count()
    Grower.from_checkpoint(middle, callbacks=[resumed]).fit(train)
    assert resumed.epsilons == whole.epsilons and resumed.locations == whole.locations
    assert resumed.calls["epoch_end"] == whole.calls["epoch_end"] and resumed.calls["insert"] == 2


def test_an_unknown_schedule_is_an_error_and_a_registered_one_is_used():
    with pytest.raises(ValueError, match=r"unknown schedule 'plateu'.*did you mean 'plateau'"):
        GrowthConfig(schedule="plateu")

    @dataclass(frozen=True)
    class Once(FixedEpochs):
        @classmethod
        def from_config(cls, config):
            return cls(1)

    register_schedule("once", Once)
    try:
        history = Grower(small_model(), "mse", config(schedule="once", max_depth=3)).fit(data())
    finally:
        SCHEDULES.unregister("once")
    assert [s.epoch for s in history.stages] == [1, 2, 3] and len(history.epochs) == 3 + 2


def test_the_optimizer_comes_from_the_config_and_keeps_old_state_after_an_insertion():
    for name, kind in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)):
        grower = Grower(small_model(), "mse", config(optimizer=name, max_depth=2))
        grower.fit(data())
        assert type(grower.optimizer) is kind
        held = {id(p) for group in grower.optimizer.param_groups for p in group["params"]}
        assert held == {id(p) for p in grower.model.parameters()}
    built = []

    def momentum(parameters):
        built.append(len(parameters))
        return torch.optim.SGD(parameters, lr=1e-2, momentum=0.9)

    grower = Grower(small_model(), "mse", config(optimizer=momentum, max_depth=3))
    grower.fit(data())
    assert built == [2 + 2 + 2]  # stem, 1 layer, head; each new layer joins the live optimiser as a group
    assert [len(group["params"]) for group in grower.optimizer.param_groups] == [6, 2, 2]
    assert all(group["momentum"] == 0.9 for group in grower.optimizer.param_groups)
    state = grower.optimizer.state
    assert all("momentum_buffer" in state[p] for p in grower.model.parameters())
    assert GrowthConfig(optimizer=momentum).to_dict()["optimizer"].startswith("<callable ")
    with pytest.raises(ValueError, match="unknown optimizer 'adma'.*did you mean 'adam'"):
        GrowthConfig(optimizer="adma")


def _guide_examples() -> str:
    text = GUIDE.read_text()
    section = text[text.index("## Extending topogrow") :]
    end = section.find("\n## ", 1)
    section = section if end < 0 else section[:end]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


def test_the_user_guide_extending_examples_run():
    code = _guide_examples()
    assert "register_strategy" in code and "Callback" in code and "register_schedule" in code
    before = (set(STRATEGIES), set(SCHEDULES))
    try:
        exec(compile(code, str(GUIDE), "exec"), {"__name__": "guide_extending"})
    finally:
        for name in set(STRATEGIES) - before[0]:
            STRATEGIES.unregister(name)
        for name in set(SCHEDULES) - before[1]:
            SCHEDULES.unregister(name)
