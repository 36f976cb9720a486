"""Tasks, models, transfer benchmarks and bench sections are registries: a decorator adds one,
the CLI lists it, an unknown name gets a "did you mean"."""

import argparse
import subprocess
import sys

import pytest
import torch

import topogrow.data
from topogrow._registry import Registry
from topogrow.cli import main
from topogrow.cli.parser import build_parser
from topogrow.data import TASKS, Task, load, register_task

EXPECTED_TASKS = ["california", "synthetic", "mnist5k", "mnist", "digits", "heat-map", "heat-inverse"]


def test_tasks_are_a_registry_with_help_texts():
    assert isinstance(TASKS, Registry) and TASKS.kind == "task"
    assert list(TASKS)[: len(EXPECTED_TASKS)] == EXPECTED_TASKS
    assert {"navier-stokes", "wind"} <= set(TASKS)
    assert all(TASKS.help(name) for name in TASKS)
    assert topogrow.data.TASKS is TASKS and topogrow.data.register_task is register_task


@pytest.mark.parametrize("name, hint", [("californa", "california"), ("heat_map", "heat-map"), ("wnd", "wind")])
def test_an_unknown_task_says_did_you_mean(name, hint):
    with pytest.raises(ValueError, match=f"unknown task '{name}'.*did you mean '{hint}'"):
        load(name)
    with pytest.raises(KeyError):  # a Mapping too
        TASKS[name]


def test_an_unknown_task_on_the_command_line(tmp_path, capsys):
    assert main(["run", "californa", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("topogrow: error: unknown task 'californa'") and "did you mean 'california'" in err


def _tiny(seed: int = 0, data_dir=None, n_train=None) -> Task:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(30, 2, generator=g)
    y = X.sum(1, keepdim=True)
    return Task("tiny", "regression", X[:20], y[:20], X[20:25], y[20:25], X[25:], y[25:], out_features=1)


def test_a_registered_task_is_made_and_listed_by_help():
    register_task("tiny-test-task", help="two features, their sum")(_tiny)
    try:
        task = load("tiny-test-task", seed=1)
        assert task.name == "tiny" and task.X_train.shape == (20, 2)
        with pytest.raises(ValueError, match="already registered"):
            register_task("tiny-test-task", _tiny)
        verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        assert "tiny-test-task (two features, their sum)" in " ".join(verbs.choices["run"].format_help().split())
    finally:
        TASKS.unregister("tiny-test-task")
    assert "tiny-test-task" not in TASKS


@pytest.mark.parametrize("verb", ["run", "compare"])
def test_help_lists_every_registered_task(verb):
    result = subprocess.run(
        [sys.executable, "-m", "topogrow.cli", verb, "--help"], capture_output=True, text=True, check=True
    )
    text = " ".join(result.stdout.split())
    for name in TASKS:  # whole: a hyphenated name is never broken across lines
        assert f"{name} (" in text, name
    from topogrow.growth.strategies import growth_strategies
    from topogrow.nn.blocks import BLOCKS

    for name in [*(s for s in growth_strategies() if verb == "compare" or s != "scratch"), *BLOCKS]:
        assert f" {name}" in text and f"{name.split('-')[0]}- " not in text, name
    assert "--max-depth" in text and "--lr" in text and "--weight-decay" in text


def test_models_benchmarks_and_bench_sections_are_registries():
    from topogrow.experiments.bench import SECTIONS, BenchConfig
    from topogrow.experiments.experiment import MODELS, ModelConfig
    from topogrow.experiments.transfer import BENCHMARKS, TransferConfig

    assert list(MODELS) == ["mlp", "cnn", "vit"] and list(BENCHMARKS) == ["heat", "mnist"]
    assert BenchConfig().sections == tuple(SECTIONS)
    assert TransferConfig("mnist").samples == BENCHMARKS["mnist"].samples == (10, 25, 50)
    with pytest.raises(ValueError, match="unknown model 'mpl'.*did you mean 'mlp'"):
        ModelConfig(family="mpl")
    with pytest.raises(ValueError, match="unknown benchmark 'heta'.*did you mean 'heat'"):
        TransferConfig("heta")
    with pytest.raises(ValueError, match="unknown bench section 'memroy'.*did you mean 'memory'"):
        BenchConfig(sections=("memroy",))
    with pytest.raises(ValueError, match="repeats must be an integer >= 1, got 0"):
        BenchConfig(repeats=0)
    with pytest.raises(ValueError, match="threads must be None or an integer >= 1, got 0"):
        BenchConfig(threads=0)
