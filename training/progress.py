"""Training progress that shows in logs, not only on a terminal.

tqdm redraws one line in place and, without a terminal, a fast epoch leaves `0/47` in the
log until it ends. Here every epoch prints its own line when it finishes (batches, mean
loss, seconds), and a line every `every_seconds` while it runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class EpochProgress:
    title: str
    every_seconds: float = 10.0
    batches: int = 0
    loss_sum: float = 0.0
    started: float = field(default_factory=time.monotonic)
    last_line: float = field(default_factory=time.monotonic)

    def step(self, loss: float) -> None:
        self.batches += 1
        self.loss_sum += loss
        now = time.monotonic()
        if now - self.last_line >= self.every_seconds:
            self.last_line = now
            self.line("...")

    def line(self, state: str) -> None:
        mean = self.loss_sum / max(self.batches, 1)
        elapsed = time.monotonic() - self.started
        print(f"    {self.title}: {self.batches} batches, mean loss {mean:.4f}, "
              f"{elapsed:.1f}s {state}", file=sys.stderr, flush=True)  # fmt: skip


@contextmanager
def epoch_progress(model: str, epoch: int, epochs: int) -> Iterator[EpochProgress]:
    progress = EpochProgress(f"{model} epoch {epoch + 1}/{epochs}")
    yield progress
    progress.line("done")
