"""What a user sees while a job runs: plain lines, and one live progress line per running stage.

Engine code reports through a `log` callable (`log(message)`: a line worth keeping) and, for
progress, `progress(log, key, message)`: the running stage's state, redrawn in place on a
terminal and printed at most every `every_s` seconds per stage elsewhere (a job log, CI). A log
without progress support (plain `print`, a test's collector) simply drops progress.

In a job, the driver actor and the training workers send both kinds of events over a Ray queue
(`QueueLog`) to the job's process, which shows them on a `Console`; the engines' own output
(vLLM, DeepSpeed, Ray) stays in the worker log files unless `--verbose`.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Callable, TextIO

LINE, PROGRESS = "line", "progress"


def progress(log: Callable[[str], None], key: str, message: str) -> None:
    """Report a running stage's progress, if `log` shows progress at all."""
    report = getattr(log, "progress", None)
    if report is not None:
        report(key, message)


def eta(done: int, total: int, seconds: float) -> str:
    """'ETA 1m05s' from the rate so far ('' until something is done)."""
    if done <= 0 or total <= done or seconds <= 0:
        return ""
    left = seconds * (total - done) / done
    return f"ETA {int(left // 60)}m{int(left % 60):02d}s" if left >= 60 else f"ETA {left:.0f}s"


class QueueLog:
    """A log that sends its events to the job's process over a `ray.util.queue.Queue`, and
    prints lines to its own process's output too (they stay in that worker's log file)."""

    def __init__(self, queue):
        self.queue = queue

    def __call__(self, message: str) -> None:
        print(message, flush=True)
        self._send((LINE, "", message))

    def progress(self, key: str, message: str) -> None:
        self._send((PROGRESS, key, message))

    def _send(self, event: tuple) -> None:
        try:
            self.queue.put_nowait(event)
        except Exception:  # noqa: BLE001 - a full or gone queue must never stop the work
            pass


class Console:
    """Shows events on a stream. On a terminal one progress line is redrawn in place; a line
    clears it first. Elsewhere progress is a plain line, at most one per `every_s` per key."""

    def __init__(self, stream: TextIO = sys.stdout, tty: bool | None = None,
                 every_s: float = 30.0, clock=time.monotonic):
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.every_s, self.clock = every_s, clock
        self._last: dict[str, float] = {}
        self._live = ""  # the progress line now on screen (terminal only)

    def show(self, event: tuple) -> None:
        kind, key, message = event
        if kind == PROGRESS:
            self.progress(key, message)
        else:
            self.line(message)

    def line(self, message: str) -> None:
        self._clear()
        self.stream.write(message + "\n")
        self.stream.flush()

    def progress(self, key: str, message: str) -> None:
        text = f"  {key}: {message}".rstrip()
        if self.tty:
            self._clear()
            self._live = text[:160]
            self.stream.write(self._live)
        else:
            now = self.clock()
            if now - self._last.get(key, -self.every_s) < self.every_s:
                return
            self._last[key] = now
            self.stream.write(text + "\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self.tty and self._live:
            self.stream.write("\r" + " " * len(self._live) + "\r")
            self._live = ""


def text_table(headers: list[str], cells: list[list[str]], align: str = "right") -> str:
    """Columns as wide as their widest cell, a rule under the headers; cells right-aligned
    (numbers) or left-aligned (names and states). The round table, the compare table and
    `llm2llm status` all print through here."""
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    pad = str.rjust if align == "right" else str.ljust

    def line(values: list[str]) -> str:
        return "  ".join(pad(v, w) for v, w in zip(values, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


# C0 controls but tab and newline, DEL, and C1 controls: what a terminal acts on (escape
# sequences clear the screen, set the title, write the clipboard) instead of showing.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` safe to print to a terminal: each control character shown as its escape
    (`\\x1b`), so teacher-written or data text cannot drive the user's terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
