"""The progress bar: drawn only on terminals, never on stdout, and a no-op when off."""

from __future__ import annotations

import io

from modelshield.progress import Progress, ProgressReader, human_bytes, progress_wanted


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_on_a_terminal_shows_phase_bytes_percent_and_rate() -> None:
    # Given a terminal and a 4 MiB job
    term = Terminal()
    bar = Progress(4 * 1024 * 1024, phase="uploading", label="model.pt", stream=term)
    # When half is done and the phase changes
    with bar:
        bar.advance(2 * 1024 * 1024)
        half = bar.render()
        bar.phase("scanning", total=1)
    # Then the text names the file, the phase, the bytes of the total, the percent and a rate
    assert half.startswith("model.pt uploading [############............] 50.0% 2.0 MiB / 4.0 MiB")
    assert half.endswith("/s")
    assert "\r" in term.getvalue() and "scanning" in term.getvalue()
    # And closing clears the line, so later output starts clean
    assert term.getvalue().endswith("\r")


def test_no_bar_when_not_a_terminal_or_quiet() -> None:
    pipe = io.StringIO()
    assert not progress_wanted(stream=pipe)
    assert not progress_wanted(quiet=True, stream=Terminal())
    with Progress(100, phase="uploading", stream=pipe) as bar:
        bar.advance(100)
    assert pipe.getvalue() == ""


def test_a_reader_advances_the_bar_by_what_is_read() -> None:
    bar = Progress(10, phase="encrypting", enabled=False)
    reader = ProgressReader(io.BytesIO(b"0123456789"), bar)
    assert reader.read(4) == b"0123" and bar.done == 4
    assert reader.read() == b"456789" and bar.done == 10


def test_item_units_and_human_bytes() -> None:
    bar = Progress(10, phase="rescanning", unit="artifacts", enabled=False)
    bar.set(3)
    assert "3 / 10 artifacts" in bar.render()
    assert human_bytes(512) == "512 B" and human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 << 30) == "3.0 GiB"
