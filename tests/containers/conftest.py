"""What the containers test measured (image sizes, build and phase times), printed after the run."""

from __future__ import annotations

import pytest

_MEASURED = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def measured(pytestconfig: pytest.Config) -> list[str]:
    """Return the list that the containers test appends its measurements to."""
    return pytestconfig.stash.setdefault(_MEASURED, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the measurements of the containers test, when it ran."""
    lines = terminalreporter.config.stash.get(_MEASURED, [])
    if lines:
        terminalreporter.section("containers: measured")
        for line in lines:
            terminalreporter.write_line(line)
