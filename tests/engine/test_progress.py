"""The one progress bar (mrseg.engine.progress): counts from many threads, plain whole lines off a
terminal, the columns and messages on one, and the windowed pace and ETA that training shows."""

from __future__ import annotations

import datetime
import sys
import threading

import pytest

from mrseg.engine.progress import ProgressBar, Window, eta
from tests.engine.conftest import strip_ansi

PREDICT_COLUMNS = ("bar", "count", "{rate} img/s", "eta", "{failed} failed")


@pytest.fixture
def no_terminal(monkeypatch):
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("drawn", [False, True])
def test_advances_from_many_threads_all_count(request, no_terminal, capsys, drawn):
    if drawn:
        request.getfixturevalue("terminal")
    threads, each = 8, 400
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads swap often: an unlocked read-add-write would lose counts
    try:
        with ProgressBar("predict", threads * each, *PREDICT_COLUMNS, failed=0) as bar:
            workers = [
                threading.Thread(target=lambda: [bar.advance() for _ in range(each)]) for _ in range(threads)
            ]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
    finally:
        sys.setswitchinterval(switch)
    assert bar.live == drawn
    assert bar.completed == threads * each
    if drawn:
        assert f"{threads * each}/{threads * each}" in strip_ansi(capsys.readouterr().err)


def test_off_a_terminal_messages_are_whole_plain_lines_and_quiet_is_silent(no_terminal, capsys):
    long = "warning: skipped " + "folder/" * 20 + "photo.jpg: cannot identify image file"  # > 80 columns
    with ProgressBar("predict", 3, *PREDICT_COLUMNS, failed=0) as bar:
        bar.advance()
        bar.say(long)
        bar.advance(failed=1)
    assert not bar.live
    assert capsys.readouterr().err == long + "\n"  # no bar, no wrapping at 80 columns
    with ProgressBar("train", 3, quiet=True) as quiet:
        quiet.say("resumed from last.pt")
    assert capsys.readouterr().err == ""


def test_on_a_terminal_the_bar_shows_its_columns_and_messages_go_above_it(terminal, capsys):
    with ProgressBar("predict", 4, *PREDICT_COLUMNS, failed=0) as bar:
        bar.say("warning: skipped b.jpg")
        bar.advance()
        bar.advance(failed=1)
    with ProgressBar("train", 10, "bar", "count", "{info}", completed=2, info="") as train:
        train.update(3, info="loss 0.500  1.250 s/it  ETA 0:09")
    lines = [line.strip() for line in strip_ansi(capsys.readouterr().err).splitlines() if line.strip()]
    assert "warning: skipped b.jpg" in lines
    predict_line = [line for line in lines if line.startswith("predict")][-1]  # its last redraw
    assert " 2/4 " in predict_line and " img/s " in predict_line and predict_line.endswith(" 1 failed")
    assert lines[-1].startswith("train") and lines[-1].endswith(" 3/10 loss 0.500  1.250 s/it  ETA 0:09")


def test_pace_is_the_mean_of_the_window_and_the_eta_follows_it():
    pace = Window(4)
    assert pace.mean is None and eta(pace.mean, 10) == "-"
    for seconds in [9.0, 1.0, 1.0, 1.0, 1.0]:
        pace.add(seconds)
    assert pace.mean == pytest.approx(1.0)  # the 9 s step has left the window
    assert eta(pace.mean, 60) == "1:00"
    assert eta(2.5, 1490) == str(datetime.timedelta(seconds=3725)) == "1:02:05"
    assert eta(59.6, 1) == "1:00" and eta(-3.0, 1) == "0:00"
