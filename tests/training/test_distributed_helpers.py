"""The helpers for several processes (topogrow.training.distributed), in one process: shards, and
identities without a process group. Growth over two processes: tests/growth/test_distributed.py."""

import os

import pytest
import torch

from topogrow.training import distributed


def test_shard_splits_contiguously_and_concatenates_back():
    x, y = torch.arange(10.0).reshape(5, 2), torch.arange(5.0)
    parts = [distributed.shard(x, y, r, 2) for r in range(2)]
    assert [p[0].shape[0] for p in parts] == [3, 2]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    assert torch.equal(distributed.shard(x, y)[0], x)  # no process group: everything
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        distributed.shard(x, y, 2, 2)
    with pytest.raises(ValueError, match="at least one"):
        distributed.shard(x[:1], y[:1], 0, 2)


def test_helpers_without_a_process_group_are_identities():
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (0, 1, True)
    t = torch.tensor([1.5, 2.0], dtype=torch.float32)
    summed = distributed.all_reduce_sum(t)
    assert summed.dtype == torch.float64 and torch.equal(summed, t.double())
    assert distributed.reduce_mean(6.0, 4) == 1.5
    assert distributed.broadcast(t) is t
    distributed.barrier()
    assert distributed.init_process_group() is False or "WORLD_SIZE" in os.environ
