"""A server's output stays bounded: capped log file, last lines kept, rate-limited log events."""

from __future__ import annotations

from pathlib import Path

from tui_tuner.adapters.server_output import (
    LAST_LINES_SHOWN,
    CappedLog,
    LineBudget,
    ServerOutput,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(start: int, stop: int) -> bytes:
    return b"".join(b"line %06d\n" % i for i in range(start, stop))


def test_log_under_the_cap_is_written_as_is(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "server.log", head_bytes=1000, tail_bytes=100)
    log.write(b"one\r\ntwo \xff")
    log.write(b"three")
    log.close()
    log.close()
    assert (tmp_path / "server.log").read_bytes() == b"one\r\ntwo \xffthree\n"


def test_log_keeps_its_head_and_tail_and_says_what_it_dropped(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    log = CappedLog(path, head_bytes=1000, tail_bytes=200)
    data = lines(0, 1000)  # 12,000 bytes
    for i in range(0, len(data), 700):
        log.write(data[i : i + 700])
    log.close()
    text = path.read_text().splitlines()
    assert text[0] == "line 000000"
    head_end = text.index(next(t for t in text if t.startswith("[tui-tuner] server.log is at")))
    assert text[head_end - 1] == "line 000082"  # 83 whole lines fit in 1,000 bytes
    dropped = next(t for t in text if "of server output dropped here" in t)
    tail = text[text.index(dropped) + 1 :]
    assert tail == [f"line {i:06d}" for i in range(1000 - len(tail), 1000)]
    assert 10 <= len(tail) <= 17  # between 100 and 200 bytes of whole lines
    n_dropped = 1000 - 83 - len(tail)
    assert f"({n_dropped:,} lines)" in dropped and f"{n_dropped * 12:,} bytes" in dropped
    assert path.stat().st_size < 1000 + 200 + 300
    log.note("a note after the close")
    assert path.read_text().splitlines()[-1] == "a note after the close"


def test_budget_gives_a_burst_then_a_rate() -> None:
    clock = Clock()
    budget = LineBudget(per_s=10, burst=50, clock=clock)
    assert budget.take(80) == 50 and budget.take(5) == 0
    clock.now = 0.5
    assert budget.take(100) == 5
    clock.now = 100.0
    assert budget.take(1000) == 50  # never more than the burst


def test_flood_shows_a_bounded_number_of_lines_and_counts_the_rest(tmp_path: Path) -> None:
    clock = Clock()
    shown: list[str] = []
    out = ServerOutput(
        CappedLog(tmp_path / "server.log", head_bytes=10_000, tail_bytes=1_000),
        shown.append,
        keep=50,
        budget=LineBudget(per_s=100, burst=200, clock=clock),
    )
    total = 0
    for second in range(10):  # 10 s at 10,000 lines a second, in chunks of 100 lines
        for _ in range(100):
            out.feed(lines(total, total + 100))
            total += 100
            clock.now += 0.01
        assert len(shown) <= 200 + 100 * (second + 1) + (second + 1)
    out.feed(b"the last words")
    out.finish()
    notices = [s for s in shown if s.startswith("[tui-tuner]")]
    assert 5 <= len(notices) <= 11  # at most one a second, and one at the end
    not_shown = sum(int(s.split()[1].replace(",", "")) for s in notices)
    assert not_shown + len(shown) - len(notices) == total + 1  # every line shown or counted
    assert shown[-1] == "the last words" and notices[-1].endswith("the last lines follow")
    assert shown[-LAST_LINES_SHOWN:] == [*(f"line {i:06d}" for i in range(total - 19, total)),
                                         "the last words"]  # fmt: skip
    assert out.tail[-1] == "the last words" and len(out.tail) == 50
    assert (tmp_path / "server.log").stat().st_size < 10_000 + 1_000 + 300
    end = f"line {total - 1:06d}\nthe last words\n"
    assert (tmp_path / "server.log").read_text().endswith(end)


def test_quiet_output_is_shown_whole(tmp_path: Path) -> None:
    shown: list[str] = []
    out = ServerOutput(CappedLog(tmp_path / "server.log"), shown.append)
    out.feed(b"INFO starting\r\nINFO ready\nhalf a ")
    out.feed(b"line \xff")
    out.finish()
    assert shown == ["INFO starting", "INFO ready", "half a line \ufffd"]
    assert out.tail == shown


def test_a_line_without_end_is_passed_on_in_pieces(tmp_path: Path) -> None:
    shown: list[str] = []
    out = ServerOutput(CappedLog(tmp_path / "server.log"), shown.append)
    for _ in range(100):
        out.feed(b"x" * 10_000)
    out.finish()
    assert sum(map(len, shown)) == 1_000_000 and max(map(len, shown)) < 80_000


def test_a_log_that_cannot_be_written_leaves_the_lines_shown() -> None:
    """A full disk (here /dev/full, where every write fails with ENOSPC) stops the log file,
    not the server's output: the lines are still shown and kept for the failure classifier."""
    shown: list[str] = []
    out = ServerOutput(CappedLog(Path("/dev/full")), shown.append)
    out.feed(b"INFO one\nINFO two\n")
    out.feed(b"INFO three\n")
    out.note("the server did not exit within 2 s of SIGTERM: killed")
    out.finish()
    assert shown[0] == "[tui-tuner] server.log cannot be written (No space left on device): " \
        "from here the server's lines are only shown"  # fmt: skip
    assert shown[1:4] == ["INFO one", "INFO two", "INFO three"]
    assert out.tail[-1].endswith("killed") and out.log.error is not None
