"""Progress: a bar on a terminal, one plain line per stage into a file or a pipe."""

import io

import torch

from helpers import regression_data, short_growth_config
from topogrow import Grower, ResidualMLP
from topogrow.growth import ProgressBar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _fit(stream):
    torch.manual_seed(0)
    model = ResidualMLP(4, 8, 1, 1).double()
    Grower(model, "mse", short_growth_config(), callbacks=[ProgressBar("demo", stream=stream)]).fit(
        regression_data(96, 0)
    )
    return stream.getvalue()


def test_a_pipe_gets_one_plain_line_per_stage_and_one_at_the_end():
    text = _fit(io.StringIO())
    lines = text.splitlines()
    assert "\r" not in text
    assert [line.split(":")[1].split(" ended")[0].strip() for line in lines[:-1]] == ["stage 0", "stage 1", "stage 2"]
    assert "a layer at location" in lines[0] and "growth stopped: reached max depth 3" in lines[2]
    assert lines[-1].startswith("demo: done after 8 epochs: depth 3, best val ")


def test_a_terminal_gets_the_bar():
    text = _fit(_Terminal())
    assert "\r" in text and "demo" in text and "ended at epoch" not in text
