"""When a growth run writes checkpoints, and what of the run they hold (the file format is
:mod:`topogrow.growth.checkpoint`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from topogrow.growth.checkpoint import Checkpointer
from topogrow.growth.state_encoding import encode_state
from topogrow.nn.saved import check_rebuildable
from topogrow.training.distributed import barrier, is_main_process


class RunCheckpoints:
    """Checkpoints of one :meth:`Grower.fit`: after every stage, every ``every`` epochs
    (0: never in between) and at the end, into ``directory`` (``None``: none are written).

    In a distributed run process 0 writes and the others wait at a barrier. ``grower`` is the
    :class:`~topogrow.growth.grower.Grower` whose run it saves.
    """

    def __init__(
        self, grower, directory: str | Path | None, every: int = 0, keep: int = 2, resumed: Path | None = None
    ) -> None:
        self.grower, self.every = grower, every
        self.enabled = directory is not None
        self.writer: Checkpointer | None = None
        if self.enabled:
            check_rebuildable(grower.model)  # fail now, not at the first checkpoint
            if is_main_process():
                self.writer = Checkpointer(directory, keep, resumed_from=resumed)
        self.saved = resumed is not None  # the state is the checkpoint's

    @property
    def last(self) -> Path | None:
        """The newest checkpoint written (or kept), if any."""
        return None if self.writer is None else self.writer.last

    def describe_last(self) -> str:
        """Where the last good state is, for an error message."""
        if self.writer is None:
            return "no checkpoint was being written"
        if self.writer.last is None:
            return "no checkpoint had been written yet"
        return f"the last good checkpoint is {self.writer.last}"

    def changed(self) -> None:
        """The run moved on since the last checkpoint."""
        self.saved = False

    def epoch_done(self, epoch: int, last: bool = False) -> None:
        """After an epoch: a checkpoint when ``every`` divides it (not after the run's last one)."""
        self.saved = False
        if self.every and epoch % self.every == 0 and not last:
            self.save()

    def save(self) -> None:
        """Write a checkpoint of the run as it is now."""
        grower = self.grower
        if self.writer is None:
            if self.enabled and grower.distributed_run.active:
                barrier()
                self.saved = True
            return
        state = grower.progress
        state.elapsed = time.perf_counter() - grower.start_time
        grower.history.wall_time = state.elapsed
        tensors: dict[str, Any] = {}
        trainer: dict[str, Any] = {
            "config": grower.config.to_dict(),
            "loss": grower.loss_name,
            "progress": state.to_dict(),
            "callbacks": encode_state(grower.callback_states(), tensors),
            "scheduler": None
            if grower.scheduler is None
            else encode_state(grower.scheduler.state_dict(), tensors, "scheduler"),
            "history": grower.history.to_dict(),
            "metadata": grower.metadata,
        }
        summary = {
            "epoch": len(grower.history.epochs),
            "stage": state.stage,
            "phase": state.phase,
            "depth": grower.model.depth,
        }
        self.writer.save(
            model=grower.model,
            optimizer=grower.optimizer,
            trainer=trainer,
            generators=grower.generators,
            summary=summary,
            tensors=tensors,
        )
        self.saved = True
        if grower.distributed_run.active:
            barrier()

    def save_if_changed(self) -> None:
        """A final checkpoint unless the last one already holds this state."""
        if not self.saved:
            self.save()
