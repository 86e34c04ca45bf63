"""Campaign progress when stderr is not a terminal: plain lines at a steady pace, resume counts, Ctrl-C."""

from __future__ import annotations

import io

import pytest

from headstrong.campaign.progress import PlainProgress, campaign_progress, start_line


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_come_at_most_once_per_interval() -> None:
    clock, stream = Clock(), io.StringIO()
    plain = PlainProgress(total=1000, done=0, stream=stream, every=30.0, clock=clock)
    for _ in range(10):  # 10 s of work, 100 pairs a second: no line yet
        clock.now += 1
        plain.advance(100)
    assert stream.getvalue() == ""
    plain.done = 0
    for second in range(1, 10):
        clock.now = 30.0 * second
        plain.advance(100)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 9  # one line per 30 s step while pairs remain
    assert lines[0].startswith("pairs 100/1,000 (10%)") and "pairs/s" in lines[0] and "left" in lines[0]


def test_not_a_terminal_gets_a_start_line_progress_and_an_end_line() -> None:
    stream = io.StringIO()
    with campaign_progress(True, 300, 0, stream=stream, every=0.0) as advance:
        for _ in range(3):
            advance(100)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "campaign: 300 (fault, image) pairs planned"
    assert lines[1].startswith("pairs 100/300 (33%)") and lines[2].startswith("pairs 200/300 (67%)")
    assert lines[-1].startswith("pairs 300/300 (100%)") and lines[-1].endswith(": done")
    assert "\x1b" not in stream.getvalue()  # no terminal control codes in a log file


def test_a_resumed_run_says_how_much_it_found_done() -> None:
    assert start_line(5000, 1234) == ("campaign: resuming: 1,234 of 5,000 planned (fault, image) pairs (25%) were "
                                      "found done, 3,766 left to run")
    assert start_line(5000, 5000) == ("campaign: all 5,000 planned (fault, image) pairs were found done; "
                                      "nothing left to run")
    stream = io.StringIO()
    with campaign_progress(True, 5000, 5000, stream=stream):
        pass
    assert stream.getvalue() == start_line(5000, 5000) + "\n"  # nothing ran: no progress lines


def test_ctrl_c_says_how_far_it_got() -> None:
    stream = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with campaign_progress(True, 400, 100, stream=stream) as advance:
            advance(50)
            raise KeyboardInterrupt
    assert stream.getvalue().splitlines()[-1] == (
        "campaign: interrupted at 150 of 400 pairs; the finished chunks are stored"
    )


def test_disabled_progress_writes_nothing() -> None:
    stream = io.StringIO()
    with campaign_progress(False, 10, stream=stream) as advance:
        advance(10)
    assert stream.getvalue() == ""


def test_phase_lines_start_and_end_each_phase() -> None:
    from headstrong.campaign.progress import phase_lines

    stream = io.StringIO()
    progress = phase_lines(stream, every=3600)
    for phase, total in (("pilot", 40), ("sample", 100)):
        for done in range(0, total + 1, 20):
            progress(done, total, phase)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "pilot: 40 sites to measure" and lines[1].startswith("pilot: sites 40/40 (100%)")
    assert lines[2] == "sample: 100 sites to measure" and lines[3].startswith("sample: sites 100/100 (100%)")
    assert len(lines) == 4 and all(line.endswith(": done") for line in lines[1::2])
