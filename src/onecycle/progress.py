"""What a training run or an LR range test says while it runs (`onecycle train`, `range-test`).

At a terminal: one live line (tqdm) with the iteration, it/s, ETA, the last logged train loss,
the LR and the last test accuracy. Anywhere else (a workflow job's `run.log`, a pipe): a line
when the run starts and one plain line per evaluation, with the elapsed time, so a log file
tells how far a run got and how it went without a terminal's redraws in it.

The library functions take a `Progress` and report to it; the default, `SILENT`, says nothing.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO


class Progress:
    """Says nothing: what library calls get unless the caller asks for progress."""

    def start(self, total: int, done: int = 0, note: str = "") -> None:
        """The run has `total` iterations, `done` of them already (a resumed run)."""

    def step(self, done: int, lr: float, loss: float | None = None) -> None:
        """`done` iterations are finished; the last one ran at `lr` (and had train `loss`, when
        it was read: reading a loss syncs the device, so runs read it every log_every)."""

    def evaluation(self, *, iteration: int, lr: float, test_loss: float, test_accuracy: float,
                   train_loss: float | None = None, epoch: int | None = None,
                   epochs: int | None = None) -> None:
        """An evaluation after `iteration` iterations (and `epoch` of `epochs`)."""

    def close(self) -> None:
        pass

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SILENT = Progress()


class RunProgress(Progress):
    """A live tqdm line when `stream` is a terminal (or `live` is set), plain lines otherwise."""

    def __init__(self, name: str, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.total = 0
        self._bar: Any = None
        self._started = time.monotonic()
        self._postfix: dict[str, str] = {}

    def start(self, total: int, done: int = 0, note: str = "") -> None:
        self.total = total
        self._started = time.monotonic()
        if self.live:
            from tqdm import tqdm  # only at a terminal

            self._bar = tqdm(total=total, initial=done, desc=self.name, unit="it", file=self.stream,
                             dynamic_ncols=True, leave=True)
        else:
            resumed = f", resuming after iteration {done}" if done else ""
            self._line(f"{self.name}: {total} iterations{resumed}{f' ({note})' if note else ''}")

    def step(self, done: int, lr: float, loss: float | None = None) -> None:
        if self._bar is None:
            return
        self._postfix["lr"] = f"{lr:.4g}"
        if loss is not None:
            self._postfix["loss"] = f"{loss:.4g}"
        self._bar.set_postfix(self._postfix, refresh=False)
        self._bar.update(done - self._bar.n)

    def evaluation(self, *, iteration: int, lr: float, test_loss: float, test_accuracy: float,
                   train_loss: float | None = None, epoch: int | None = None,
                   epochs: int | None = None) -> None:
        if self._bar is not None:
            self._postfix["test_acc"] = _percent(test_accuracy)
            self._bar.set_postfix(self._postfix)
            return
        fields = []
        if epoch is not None:
            fields.append(f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}")
        fields.append(f"iteration {iteration}/{self.total}")
        if train_loss is not None:
            fields.append(f"train_loss {train_loss:.4f}")
        fields += [f"test_loss {test_loss:.4f}", f"test_accuracy {_percent(test_accuracy)}", f"lr {lr:.4g}",
                   f"elapsed {_clock(time.monotonic() - self._started)}"]
        self._line("  ".join(fields))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%" if math.isfinite(fraction) else "-"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
