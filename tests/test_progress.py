"""Progress output as a log reader sees it: a live bar on a terminal, one summary line
in a CI or container log."""

from __future__ import annotations

import io

from core.progress import Progress, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_summary_line_per_task_and_no_redraws():
    log = io.StringIO()
    for _ in progress(range(500), desc="replay", unit="ev", file=log, mininterval=0):
        pass
    with Progress(3, "publish v1", "pt", file=log) as bar:
        bar.update(2)
        bar.update()
        bar.set_postfix(loss="0.5")
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in log.getvalue()
    assert lines[0].startswith("replay: 500/500 ev in ") and lines[0].endswith(" ev/s)")
    assert lines[1].startswith("publish v1: 3/3 pt in ") and lines[1].endswith(", loss=0.5")


def test_a_terminal_gets_the_live_bar():
    term = _Terminal()
    for _ in progress(range(500), desc="replay", unit="ev", file=term, mininterval=0):
        pass
    out = term.getvalue()
    assert "\r" in out and "500/500" in out and "replay: 500/500 ev in" not in out


def test_quiet_or_unleft_tasks_print_nothing_of_their_own():
    log = io.StringIO()
    for _ in progress(range(10), desc="log", file=log, quiet=True):
        pass
    with Progress(10, "epoch 1/2", "step", file=log, leave=False) as bar:
        bar.update(10)
        bar.write("epoch 1/2  loss 0.1")
    assert log.getvalue() == "epoch 1/2  loss 0.1\n"
