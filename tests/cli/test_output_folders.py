"""Output folders (issue 13, item 3): a lock per folder, no silent overwrite of another run,
``--resume`` errors, permissions that follow the umask, I/O errors that name the file."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import sys

import pytest

from topogrow import _io
from topogrow.cli import main, runs
from topogrow.cli.outdir import LOCK_NAME
from topogrow.growth import checkpoint as ckpt


def _argv(out, *extra: str) -> list[str]:
    return [
        "run",
        "synthetic",
        "--epochs-per-stage",
        "1",
        "--final-epochs",
        "0",
        "--max-depth",
        "2",
        "--width",
        "6",
        "--quiet",
        "--threads",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def _lock(folder, pid: int, command: str = "topogrow run synthetic --out elsewhere") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": socket.gethostname(), "started": "2026-12-01 22:10:03", "command": command}
    (folder / LOCK_NAME).write_text(json.dumps(record))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


# ----------------------------------------------------------------------------- the lock
@pytest.mark.parametrize("verb", ["run", "compare"])
def test_a_second_command_on_a_folder_in_use_refuses_at_once(tmp_path, capsys, verb):
    out = tmp_path / "r"
    _lock(out, os.getpid())  # a live process holds it
    argv = (
        _argv(out) if verb == "run" else ["compare", "synthetic", "--seeds", "1", "--strategies", "td", *_argv(out)[2:]]
    )
    assert main(argv) == 2
    assert _error(capsys) == (
        f"topogrow: error: {out} is in use by process {os.getpid()} since 2026-12-01 22:10:03 "
        "(topogrow run synthetic --out elsewhere)"
    )
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # the holder's lock kept, nothing written


def test_a_stale_lock_is_taken_over_with_a_warning_and_the_lock_is_removed_at_the_end(tmp_path, capsys):
    out, pid = tmp_path / "r", _dead_pid()
    _lock(out, pid)
    assert main(_argv(out)) == 0
    err = capsys.readouterr().err
    assert f"topogrow: warning: taking over the lock of {out} left by process {pid}, which no longer runs" in err
    assert (out / "run.json").exists() and not (out / LOCK_NAME).exists()


def test_the_lock_is_held_during_the_run_and_removed_after_an_error(tmp_path, capsys, monkeypatch):
    out, seen = tmp_path / "r", []

    def failing_task(*args, **kwargs):
        holder = json.loads((out / LOCK_NAME).read_text())
        seen.append(holder)
        raise ValueError("no such data")

    monkeypatch.setattr(runs, "load_task", failing_task)
    assert main(_argv(out)) == 2
    assert _error(capsys) == "topogrow: error: no such data"
    (holder,) = seen
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert holder["command"].startswith("topogrow run synthetic ") and holder["started"]
    assert not out.exists()  # created for the lock, left empty: removed


# ------------------------------------------------------------ foreign folders, --overwrite
def test_a_folder_with_files_topogrow_did_not_write_is_refused_and_overwrite_keeps_them(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(_argv(out)) == 2
    message = _error(capsys)
    assert message.startswith(f"topogrow: error: {out} is not empty: it holds files topogrow did not write (notes.txt)")
    assert "--overwrite" in message
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    assert main(_argv(out, "--overwrite")) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "run.json").exists() and (out / "model.json").exists()


def test_another_runs_results_are_refused_and_overwrite_replaces_only_topogrows_files(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(_argv(out)) == 0
    first = json.loads((out / "run.json").read_text())
    (out / "keep.csv").write_text("1,2\n")
    (out / "checkpoints" / "mine.txt").write_text("keep")
    capsys.readouterr()
    assert main(_argv(out, "--seed", "1")) == 2
    assert "it holds another run's results (checkpoints, model.json, " in _error(capsys)
    assert json.loads((out / "run.json").read_text()) == first  # untouched

    assert main(_argv(out, "--seed", "1", "--overwrite")) == 0
    assert json.loads((out / "run.json").read_text())["growth"]["seed"] == 1
    assert (out / "keep.csv").read_text() == "1,2\n" and (out / "checkpoints" / "mine.txt").read_text() == "keep"


def test_resuming_a_runs_own_checkpoints_needs_no_overwrite(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(_argv(out)) == 0
    assert main(_argv(out, "--resume", str(out / "checkpoints"))) == 0
    assert "resuming from" in capsys.readouterr().err


# ------------------------------------------------------------------------- --resume errors
def test_resume_of_a_missing_folder_is_an_error(tmp_path, capsys):
    assert main(_argv(tmp_path / "r", "--resume", str(tmp_path / "typo"))) == 2
    assert _error(capsys) == (
        f"topogrow: error: --resume {tmp_path / 'typo'}: no such folder (leave out --resume to start a new run)"
    )
    assert not (tmp_path / "typo").exists() and not (tmp_path / "r").exists()


def test_resume_of_a_folder_without_a_checkpoint_is_an_error(tmp_path, capsys):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    assert main(_argv(tmp_path / "r", "--resume", str(tmp_path / "empty"))) == 2
    assert _error(capsys).startswith(f"topogrow: error: --resume {tmp_path / 'empty'}: holds no checkpoint")
    assert list((tmp_path / "empty" / "checkpoints").iterdir()) == []


# ------------------------------------------------------------------------------ permissions
@pytest.mark.parametrize(("umask", "file", "folder"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_files_and_folders_follow_the_umask(tmp_path, umask, file, folder):
    out = tmp_path / "r"
    old = os.umask(umask)
    try:
        assert _io.umask() == umask
        assert main(_argv(out)) == 0
    finally:
        os.umask(old)
    checkpoint = ckpt.find_checkpoint(out / "checkpoints")

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    for path in (out / "run.json", out / "run.png", out / "model.json", out / "model.safetensors"):
        assert mode(path) == file, path
    for path in (out, out / "checkpoints", checkpoint):
        assert mode(path) == folder, path
    for path in checkpoint.iterdir():
        assert mode(path) == file, path


# --------------------------------------------------------------------- errors name the file
def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_names_the_file_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    target = tmp_path / "run.json"
    target.write_text("old")
    monkeypatch.setattr(_io, "write_synced", _no_space)
    with pytest.raises(OSError) as caught:
        _io.write_json_atomic(target, {"new": 1})
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value) == f"{target}: No space left on device (nothing was written)"
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_a_full_disk_while_checkpointing_names_the_checkpoint_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    monkeypatch.setattr(ckpt, "_write_bytes", _no_space)
    assert main(_argv(out)) == 2
    assert _error(capsys) == (
        f"topogrow: error: {out / 'checkpoints' / 'ckpt-000001' / 'model.json'}: No space left on device "
        "(the checkpoint was not written; nothing half-written is left)"
    )
    assert list((out / "checkpoints").iterdir()) == []  # no ckpt, no temporary folder
    assert not (out / LOCK_NAME).exists()


def test_a_full_disk_writing_run_json_names_it_in_one_line(tmp_path, capsys, monkeypatch):
    out, write = tmp_path / "r", _io.write_synced

    def full_for_run_json(path, data):
        if os.path.basename(path).startswith(".run.json."):
            _no_space()
        write(path, data)

    monkeypatch.setattr(_io, "write_synced", full_for_run_json)
    assert main(_argv(out)) == 2
    assert _error(capsys) == f"topogrow: error: {out / 'run.json'}: No space left on device (nothing was written)"
    assert not any(p.name.startswith(".run.json") for p in out.iterdir())
