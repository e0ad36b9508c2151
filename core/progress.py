"""Progress of long tasks (training epochs, publishing, replay, evaluation runs): a live
tqdm bar when the output is a terminal, else one summary line when the task ends, so a
CI or container log holds no bar redraws.

``progress`` wraps an iterable, ``Progress`` is updated by hand; both write to stderr.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import IO, Any, TypeVar

from tqdm import tqdm

from core.logs import is_terminal

T = TypeVar("T")


class Progress:
    """A bar on a terminal; otherwise counts and, at ``close``, prints
    ``<desc>: <n>/<total> <unit> in <s>s (<rate> <unit>/s)`` and the last postfix.

    ``quiet``: nothing at all. ``leave=False``: the bar is erased at the end and no
    summary line is printed (the caller prints its own, e.g. with ``write``).
    """

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        quiet: bool = False,
        leave: bool = True,
        file: IO[str] | None = None,
        mininterval: float = 0.1,
    ) -> None:
        self._file = sys.stderr if file is None else file
        self._quiet = quiet
        self._leave = leave
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = 0
        self._postfix = ""
        self._t0 = time.monotonic()
        self._closed = False
        self._bar: tqdm[Any] | None = None
        if not quiet and is_terminal(self._file):
            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                leave=leave,
                file=self._file,
                mininterval=mininterval,
            )

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, **values: object) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def write(self, line: str) -> None:
        """Print a line above the bar (or just print it), unless quiet."""
        if self._quiet:
            return
        if self._bar is not None:
            self._bar.write(line, file=self._file)
        else:
            print(line, file=self._file, flush=True)

    @property
    def seconds(self) -> float:
        """Since the task started."""
        return time.monotonic() - self._t0

    def summary(self) -> str:
        seconds = self.seconds
        done = f"{self.n:,}" if self.total is None else f"{self.n:,}/{self.total:,}"
        rate = f" ({self.n / seconds:,.0f} {self.unit}/s)" if seconds > 0 else ""
        line = f"{self.desc}: {done} {self.unit} in {seconds:.1f}s{rate}"
        return f"{line}, {self._postfix}" if self._postfix else line

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif not self._quiet and self._leave:
            print(self.summary(), file=self._file, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    items: Iterable[T],
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    quiet: bool = False,
    leave: bool = True,
    file: IO[str] | None = None,
    mininterval: float = 0.1,
) -> Iterator[T]:
    """Yield ``items``, showing progress as ``Progress`` does; the summary line comes
    once the items run out."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with Progress(total, desc, unit, quiet, leave, file, mininterval) as bar:
        for item in items:
            yield item
            bar.update()
