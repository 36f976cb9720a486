"""Progress over the runs of an experiment: a tqdm bar on a terminal; into a file or a pipe
(``make demo > log``) one plain line per run instead of the bar's carriage-return frames."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm.auto import tqdm

from topogrow.growth.callbacks import is_terminal

__all__ = ["RunProgress"]


class RunProgress:
    """``total`` runs labelled ``description``: :meth:`start` names the run under way, :meth:`done`
    counts it (with a short summary on the plain line); nothing at all when not ``enabled``."""

    def __init__(self, total: int, description: str, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total, self.description, self.enabled = total, description, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.count, self.label = 0, ""
        self.bar = None
        if enabled and is_terminal(self.stream):
            self.bar = tqdm(total=total, desc=description, unit="run", file=self.stream)

    def start(self, label: str) -> None:
        """The run ``label`` begins."""
        self.label = label
        if self.bar is not None:
            self.bar.set_postfix_str(label)

    def done(self, summary: str = "") -> None:
        """The run under way is over."""
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            line = f"{self.description} [{self.count}/{self.total}] {self.label}"
            print(f"{line}: {summary}" if summary else line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
