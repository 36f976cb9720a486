"""topogrow._io: a write either replaces the whole file or leaves the old one, and no temporary file."""

import json
import os
import stat

import numpy as np
import pytest

from topogrow import _io
from topogrow.data.pde.cache import save_npz_atomic
from topogrow.experiments.report import write_json_atomic as report_write_json
from topogrow.growth import checkpoint
from topogrow.nn import saved


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_atomic_writes_creates_folders_and_returns_the_path(tmp_path):
    target = tmp_path / "a" / "b" / "data.bin"
    assert _io.write_atomic(target, b"\x00\x01new") == target
    assert target.read_bytes() == b"\x00\x01new"
    assert stat.S_IMODE(target.stat().st_mode) == _io.file_mode()
    assert _io.write_atomic(str(target), b"again", mode=0o600) == target
    assert target.read_bytes() == b"again" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert _listing(target.parent) == ["data.bin"]


def test_text_and_json_helpers(tmp_path):
    _io.write_text_atomic(tmp_path / "t.md", "± ok\n")
    assert (tmp_path / "t.md").read_text(encoding="utf-8") == "± ok\n"
    _io.write_json_atomic(tmp_path / "j.json", {"a": [1, 2.5], "b": float("inf")})
    assert (tmp_path / "j.json").read_text() == json.dumps({"a": [1, 2.5], "b": float("inf")}, indent=1)
    assert report_write_json is _io.write_json_atomic  # the report's writer is this one


def test_write_atomic_refuses_text(tmp_path):
    with pytest.raises(TypeError, match="data must be bytes, got str"):
        _io.write_atomic(tmp_path / "x", "text")
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("where", ["write", "fsync", "chmod", "replace", "interrupt"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, where):
    target = tmp_path / "model.json"
    target.write_bytes(b"old contents")

    def fail(*args, **kwargs):
        raise KeyboardInterrupt if where == "interrupt" else OSError(f"{where} failed")

    if where == "write":  # the disk fills up half-way through the bytes

        def half(path, data):
            with open(path, "wb") as out:
                out.write(data[: len(data) // 2])
            raise OSError("No space left on device")

        monkeypatch.setattr(_io, "write_synced", half)
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", fail)
    elif where == "chmod":
        monkeypatch.setattr(os, "chmod", fail)
    else:
        monkeypatch.setattr(os, "replace", fail)
    error = KeyboardInterrupt if where == "interrupt" else OSError
    with pytest.raises(error):
        _io.write_atomic(target, b"new contents that never arrive")
    monkeypatch.undo()
    assert target.read_bytes() == b"old contents"
    assert _listing(tmp_path) == ["model.json"]


def test_every_atomic_writer_is_this_one():
    """Checkpoints, reports and the PDE cache share the writer (one place to get it right)."""
    from topogrow.data.pde import cache

    assert saved._write_atomic is _io.write_atomic
    assert checkpoint._write_bytes is _io.write_synced and checkpoint._fsync_dir is _io.fsync_dir
    assert cache.write_atomic is _io.write_atomic


def test_a_saved_model_survives_a_failed_save(tmp_path, monkeypatch):
    import torch

    from topogrow import ResidualMLP, load, save

    model = ResidualMLP(3, 4, 1, 1)
    save(model, tmp_path)
    before = _listing(tmp_path)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        save(ResidualMLP(3, 4, 2, 1), tmp_path)
    monkeypatch.undo()
    assert _listing(tmp_path) == before
    reloaded = load(tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_the_npz_cache_is_not_replaced_by_a_failed_write(tmp_path, monkeypatch):
    path = tmp_path / "cache.npz"
    save_npz_atomic(path, x=np.arange(3))
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        save_npz_atomic(path, x=np.arange(5))
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(path)["x"], np.arange(3))
    assert _listing(tmp_path) == ["cache.npz"]
