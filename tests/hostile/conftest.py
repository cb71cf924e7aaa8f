"""The hostile corpus prints its figures in the terminal summary (corpus size and the counts the issue asks for)."""

from __future__ import annotations

from hostile_summary import SUMMARY


def pytest_terminal_summary(terminalreporter):
    if SUMMARY:
        terminalreporter.section("hostile corpus")
        for line in SUMMARY:
            terminalreporter.write_line(line)
