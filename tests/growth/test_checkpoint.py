"""Checkpoints and resume: exact continuation (API and a killed CLI process), rebuilding grown
models from their spec, loading for inference, partial and corrupt files, numerical faults."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import helpers
import topogrow
from topogrow import CheckpointError, Grower, ResidualCNN, ResidualMLP, ViT
from topogrow.cli import main
from topogrow.growth import checkpoint as ckpt
from topogrow.nn.blocks import ResidualBlock, make_block

SRC = Path(__file__).resolve().parents[2] / "src"


# ---------------------------------------------------------------- helpers
def regression_data(n_samples: int, seed: int):
    return helpers.regression_data(n_samples, seed, dtype=torch.float32)


config = helpers.short_growth_config


def without_wall_time(history: dict) -> dict:
    history = dict(history)
    history.pop("wall_time")
    for part in ("stages", "epochs"):
        history[part] = [{k: v for k, v in s.items() if k != "wall_time"} for s in history[part]]
    return history


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# ------------------------------------------------- exact resume (API)
@pytest.mark.parametrize(
    "changes, loader",
    [
        (dict(strategy="td"), False),
        (dict(strategy="random", schedule="plateau", patience=1, epochs_per_stage=3), False),
        (dict(strategy="td", block="gelu-mlp"), False),
        (dict(strategy="td-how"), True),  # a DataLoader: shuffled by the global torch RNG
        (dict(strategy="small-where", lr_schedule="plateau", lr_patience=1, epochs_per_stage=3), False),
        (dict(strategy="random", lr_schedule="cosine", warmup_epochs=2, rollback=True, min_delta=0.9), False),
        (dict(strategy="small", budget="12 epochs", lr_schedule="cosine"), False),
    ],
    ids=["td", "random-plateau", "gelu-mlp-block", "dataloader", "lr-plateau", "cosine-rollback", "budget"],
)
def test_resuming_from_any_checkpoint_ends_exactly_like_the_uninterrupted_run(changes, loader, tmp_path):
    train, val = regression_data(160, seed=1), regression_data(60, seed=2)
    if loader:
        train = DataLoader(TensorDataset(*train), batch_size=32, shuffle=True)
    cfg = config(**changes)

    torch.manual_seed(0)
    reference = Grower(ResidualMLP(4, 6, 1, 1), "mse", cfg)
    history = reference.fit(train, val, checkpoint_dir=tmp_path / "all", checkpoint_every=1, keep_checkpoints=1000)
    everything = ckpt._complete(tmp_path / "all")
    n_epochs = history.total_epochs
    assert len(everything) >= n_epochs + len(history.stages)  # every epoch, every stage, (the end)
    phases = {json.loads((c / "manifest.json").read_text())["phase"] for c in everything}
    assert phases == {"grow", "final", "done"}

    for checkpoint in everything:
        resumed = Grower.from_checkpoint(checkpoint)
        assert resumed.resumed_from == checkpoint
        result = resumed.fit(train, val)
        assert without_wall_time(result.to_dict()) == without_wall_time(history.to_dict()), checkpoint.name
        assert resumed.model.spec() == reference.model.spec()
        assert_same_weights(resumed.model, reference.model)
    if changes.get("block"):
        assert reference.model.spec()["blocks"].count("gelu-mlp") == 2


def test_a_checkpoint_directory_resumes_from_its_newest_and_keeps_the_last_two(tmp_path):
    train = regression_data(100, seed=1)
    grower = Grower(ResidualMLP(4, 4, 1, 1), "mse", config(final_epochs=1))
    grower.fit(train, checkpoint_dir=tmp_path, checkpoint_every=1)
    kept = ckpt._complete(tmp_path)
    assert [c.name for c in kept] == ["ckpt-000009", "ckpt-000010"]
    assert ckpt.find_checkpoint(tmp_path) == kept[-1]
    assert json.loads((kept[-1] / "manifest.json").read_text())["phase"] == "done"
    # resuming a finished run trains nothing and gives the same history
    again = Grower.from_checkpoint(tmp_path)
    assert again.fit(train).total_epochs == grower.history.total_epochs
    # a fresh run into the same directory starts the numbering again
    Grower(ResidualMLP(4, 4, 1, 1), "mse", config(max_depth=1, final_epochs=1)).fit(train, checkpoint_dir=tmp_path)
    assert [c.name for c in ckpt._complete(tmp_path)] == ["ckpt-000001", "ckpt-000002"]


# -------------------------------------------- kill -9 and resume (CLI)
RUN = helpers.CLI_RUN


def _start(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    command = [sys.executable, "-m", "topogrow.cli", *RUN, "--out", str(out), "--checkpoint-every", "1", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_after(process: subprocess.Popen, directory: Path, index: int, timeout: float = 120.0) -> None:
    """SIGKILL ``process`` as soon as checkpoint ``index`` (or a later one) exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = ckpt._complete(directory)
        if found and ckpt._index(found[-1]) >= index:
            break
        assert process.poll() is None, f"the run ended before checkpoint {index}: {process.stderr.read()}"
        time.sleep(0.005)
    else:
        process.kill()
        pytest.fail(f"no checkpoint {index} after {timeout} s")
    assert process.poll() is None, "the run had already finished: nothing was interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_a_killed_cli_run_resumes_to_the_same_result(tmp_path, capsys):
    assert main([*RUN, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "run.json").read_text())

    out, checkpoints = tmp_path / "killed", tmp_path / "killed" / "checkpoints"
    _kill_after(_start(out), checkpoints, 2)  # mid-stage (epoch checkpoints are 1, 2; the stage's is 4)
    first = ckpt._index(ckpt._complete(checkpoints)[-1])
    _kill_after(_start(out, "--resume", str(checkpoints)), checkpoints, first + 3)  # killed again, later
    assert not (out / "run.json").exists()
    capsys.readouterr()

    assert main([*RUN, "--out", str(out), "--checkpoint-every", "1", "--resume", str(checkpoints)]) == 0
    assert "resuming from" in capsys.readouterr().err
    resumed = json.loads((out / "run.json").read_text())
    assert resumed["run"]["spec"] == whole["run"]["spec"]
    assert resumed["run"]["final_depth"] == 4
    assert resumed["run"]["metric"] == whole["run"]["metric"]  # exact: CPU, one thread
    assert without_wall_time(resumed["run"]["history"]) == without_wall_time(whole["run"]["history"])
    # the run's folder holds the model for inference
    model = topogrow.load(out)
    assert not model.training and model.spec() == whole["run"]["spec"]
    assert_same_weights(model, topogrow.load(tmp_path / "whole"))


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, capsys):
    assert main([*RUN, "--max-depth", "2", "--final-epochs", "1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    argv = [*RUN, "--max-depth", "3", "--final-epochs", "1", "--out", str(tmp_path)]
    assert main([*argv, "--resume", str(tmp_path / "checkpoints")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "written by a different run (growth max_depth is 2 there, 3 here)" in err
    assert "ckpt-" in err


def test_resume_from_a_missing_or_empty_directory_is_an_error(tmp_path, capsys):
    # (was: a fresh start writing checkpoints into the mistyped folder; more in tests/cli/test_output_folders.py)
    argv = [*RUN, "--max-depth", "2", "--final-epochs", "1", "--out", str(tmp_path / "out")]
    assert main([*argv, "--resume", str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists() and not (tmp_path / "out").exists()


# --------------------------------------------- partial and corrupt files
@pytest.fixture()
def written(tmp_path):
    """A checkpoint directory with two complete checkpoints."""
    train = regression_data(80, seed=1)
    Grower(ResidualMLP(4, 4, 1, 1), "mse", config(max_depth=2, final_epochs=1)).fit(train, checkpoint_dir=tmp_path)
    return tmp_path


def test_a_write_interrupted_midway_is_ignored_and_cleaned_up(written):
    good = ckpt.find_checkpoint(written)
    # what kill -9 during a write leaves: a temporary folder with some of the files, some cut short
    partial = written / f".ckpt-{ckpt._index(good) + 1:06d}.abc123.tmp"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:100])
    assert ckpt.find_checkpoint(written) == good
    assert topogrow.load(written).spec() == Grower.from_checkpoint(written).model.spec()
    Grower.from_checkpoint(written).fit(regression_data(80, seed=1), checkpoint_dir=written)
    assert not partial.exists()


def _flip(data: bytes) -> bytes:
    """One byte in the middle changed: same size, other content."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated"),
        (lambda p: p.write_bytes(_flip(p.read_bytes())), "corrupt"),
        (lambda p: p.unlink(), "missing"),
    ],
    ids=["truncated", "flipped-byte", "deleted"],
)
@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "trainer.json"])
def test_a_damaged_checkpoint_file_is_named(written, name, damage, problem):
    target = ckpt.find_checkpoint(written) / name
    damage(target)
    with pytest.raises(CheckpointError, match=problem) as error:
        Grower.from_checkpoint(written)
    assert str(target) in str(error.value) and "\n" not in str(error.value)


def test_a_damaged_manifest_or_model_description_is_named(written, tmp_path):
    folder = ckpt.find_checkpoint(written)
    (folder / "manifest.json").write_text('{"format": "topogrow-checkpoint", "vers')
    with pytest.raises(CheckpointError, match=r"manifest\.json: not valid JSON"):
        topogrow.load(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"manifest\.json: missing \(the checkpoint is incomplete\)"):
        Grower.from_checkpoint(folder)
    # a saved model whose weights do not fit its architecture (strict key matching)
    saved = topogrow.save(ResidualMLP(4, 4, 2, 1), tmp_path / "model")
    other = topogrow.save(ResidualMLP(4, 4, 1, 1), tmp_path / "other")
    (saved / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    description = json.loads((saved / "model.json").read_text())
    description["weights"] = json.loads((other / "model.json").read_text())["weights"]
    (saved / "model.json").write_text(json.dumps(description))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: the weights do not fit the architecture"):
        topogrow.load(saved)
    description["class"] = "ResNet"
    (saved / "model.json").write_text(json.dumps(description))
    with pytest.raises(CheckpointError, match=r"model\.json: unknown model class 'ResNet'"):
        topogrow.load(saved)


def test_the_cli_names_a_corrupt_checkpoint_in_one_line(tmp_path, capsys):
    argv = [*RUN, "--max-depth", "2", "--final-epochs", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    target = ckpt.find_checkpoint(tmp_path / "checkpoints") / "model.safetensors"
    target.write_bytes(target.read_bytes()[:50])
    capsys.readouterr()
    assert main([*argv, "--resume", str(tmp_path / "checkpoints")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"topogrow: error: {target}: truncated: 50 bytes, ") and err[-1].endswith(" expected")
    assert "Traceback" not in "\n".join(err)


def test_loading_never_unpickles():
    """safetensors and JSON only: no pickle, no torch.load (which unpickles by default)."""
    for path in (Path(__file__).resolve().parents[2] / "src").rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "pickle." not in text, path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"


# ------------------------------------------ rebuilding grown models from spec
def _grown_models():
    torch.manual_seed(0)
    mlp = ResidualMLP(4, 6, 2, 1)
    mlp.insert_block(1, ResidualBlock(make_block("gelu-mlp", mlp, 1), name="gelu-mlp"))
    mlp.insert_layer(0)
    cnn = ResidualCNN(1, (4, 8), (1, 1), 3)
    cnn.insert_block(3, ResidualBlock(make_block("conv", cnn, 3), name="conv"))
    cnn.insert_layer(0)
    vit = ViT(8, 4, 1, 8, 1, heads=2, out_features=3)
    vit.insert_block(1, ResidualBlock(vit.encoder_branch()))  # unnamed: recognised as an encoder block
    vit.insert_layer(0)
    vit.insert_block(0, ResidualBlock(make_block("gelu-mlp", vit, 0), name="gelu-mlp"))
    return [(mlp, torch.randn(5, 4)), (cnn, torch.randn(5, 1, 8, 8)), (vit, torch.randn(5, 1, 8, 8))]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["mlp", "cnn", "vit"])
def test_models_with_inserted_blocks_round_trip_through_save_and_load(index, tmp_path):
    model, x = _grown_models()[index]
    spec = json.loads(json.dumps(model.spec()))
    assert "blocks" in spec
    rebuilt = type(model)(**spec)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    loaded = topogrow.load(topogrow.save(model, tmp_path / "saved"))
    assert not loaded.training and loaded.spec() == model.spec()
    model.eval()
    assert torch.equal(loaded(x), model(x))
    if isinstance(model, ViT):
        assert spec["layers"] == ["block", "token", "encoder", "encoder"]
        assert spec["blocks"] == ["gelu-mlp", None, None, "encoder"]


def test_a_model_the_spec_cannot_describe_is_refused_before_training(tmp_path):
    model = ResidualMLP(4, 4, 1, 1, activation=_Cubic())
    with pytest.raises(TypeError, match="custom activation"):
        Grower(model, "mse", config()).fit(regression_data(50, seed=1), checkpoint_dir=tmp_path)
    unnamed = ResidualMLP(4, 4, 1, 1)
    unnamed.insert_block(0, ResidualBlock(torch.nn.Linear(4, 4)))
    with pytest.raises(TypeError, match="does not describe every layer"):
        topogrow.save(unnamed, tmp_path / "m")


class _Cubic(torch.nn.Module):
    def forward(self, z):
        return z**2 + z**3
