"""Progress over an experiment's runs: a bar on a terminal, one plain line per run elsewhere."""

import io

from topogrow.experiments.progress import RunProgress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _two_runs(stream, enabled=True):
    progress = RunProgress(2, "compare demo", enabled=enabled, stream=stream)
    for name in ("td", "no-growth"):
        progress.start(f"seed 0, {name}")
        progress.done("test MSE 0.25")
    progress.close()
    return stream.getvalue()


def test_a_pipe_gets_one_line_per_run():
    assert _two_runs(io.StringIO()).splitlines() == [
        "compare demo [1/2] seed 0, td: test MSE 0.25",
        "compare demo [2/2] seed 0, no-growth: test MSE 0.25",
    ]


def test_a_terminal_gets_the_bar_and_quiet_gets_nothing():
    text = _two_runs(_Terminal())
    assert "\r" in text and "2/2" in text and "[1/2]" not in text
    assert _two_runs(io.StringIO(), enabled=False) == ""
