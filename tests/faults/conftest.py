"""The fault ring runs against the same embedded stack as the end-to-end ring; the workload test
brings its own (tests/faults/test_workload.py) and its summary is printed at the end."""

from tests.e2e.conftest import stack  # noqa: F401 - the session fixture, shared
from tests.faults.workload import RECORD


def pytest_terminal_summary(terminalreporter) -> None:
    """Faults injected, messages, orders and invariant violations of the fault workload."""
    if not RECORD.faults and not RECORD.totals:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fault workload")
    for name, count in sorted(RECORD.faults.items()):
        write(f"  fault   {name:<40} {count:>6}")
    for name, count in sorted(RECORD.totals.items()):
        write(f"  total   {name:<40} {count:>6}")
    write(f"  invariant violations{'':<29} {len(RECORD.violations):>6}")
    for violation in RECORD.violations[:20]:
        write(f"    {violation}")
