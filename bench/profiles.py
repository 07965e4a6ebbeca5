"""A recorded pyinstrument session in a few lines: where a service's main thread spent its busy
time, by library and by function (``make profile`` writes it beside each flame graph).

The flame graph shows every stack; this summary answers "which library costs what", the question
a lever is chosen by. Idle time (the event loop waiting in ``select``/``epoll``) is left out, so
the shares are of the busy time.

    python -m bench.profiles build/profiles/safety-sqlite-always-100.pyisession
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from pyinstrument.frame import Frame
from pyinstrument.session import Session

IDLE = {"poll", "select", "sleep", "[await]", "[idle]", "wait"}
"""Leaf functions that are the loop (or a thread) waiting, not working."""


def package_of(file_path: str | None) -> str:
    """The top-level package a frame's file belongs to: the first directory after
    ``site-packages`` (``sqlalchemy``, ``faststream``, ...), the project's own top directory
    (``services``, ``shared``), ``stdlib``/``asyncio`` for Python's own, ``<native>`` else."""
    if not file_path:
        return "<native>"
    parts = Path(file_path).parts
    if "site-packages" in parts:
        after = parts[parts.index("site-packages") + 1 :]
        return after[0].removesuffix(".py") if after else "<site-packages>"
    for own in ("services", "shared", "tranche", "bench"):
        if own in parts:
            return own
    if "asyncio" in parts:
        return "asyncio"
    return "stdlib" if "lib" in parts else "<native>"


def _walk(frame: Frame, stack: tuple[str, ...], selves: Counter, totals: Counter) -> None:
    name = f"{frame.function} ({package_of(frame.file_path)})"
    here = (*stack, name)
    own = frame.total_self_time
    if own and frame.function.rsplit(".", 1)[-1] not in IDLE and not frame.is_synthetic:
        selves[(package_of(frame.file_path), name)] += own
        # A function's inclusive busy time, counted once per stack (recursion).
        for seen in set(here):
            totals[seen] += own
    for child in frame.children:
        _walk(child, here, selves, totals)


def summarise(session: Session, top: int = 25) -> str:
    root = session.root_frame(trim_stem=False)
    if root is None:
        return "no samples\n"
    selves: Counter = Counter()
    totals: Counter = Counter()
    _walk(root, (), selves, totals)
    busy = sum(selves.values()) or 1.0
    by_package: Counter = Counter()
    for (package, _), seconds in selves.items():
        by_package[package] += seconds
    lines = [
        f"busy (not waiting) main-thread time: {busy:.2f} s of {session.duration:.2f} s recorded",
        "",
        "self time by package:",
        *(
            f"  {seconds / busy:6.1%}  {seconds:7.2f} s  {package}"
            for package, seconds in by_package.most_common(top)
        ),
        "",
        "inclusive busy time by function (the project's and its libraries' entry points):",
        *(
            f"  {seconds / busy:6.1%}  {seconds:7.2f} s  {name}"
            for name, seconds in totals.most_common(top * 3)
            if " (asyncio)" not in name
            and " (stdlib)" not in name
            and not name.startswith("<module>")
        ),
        "",
        "self time by function:",
        *(
            f"  {seconds / busy:6.1%}  {seconds:7.2f} s  {name}"
            for (_, name), seconds in selves.most_common(top)
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    for path in sys.argv[1:]:
        print(f"== {path}")
        print(summarise(Session.load(path)))


if __name__ == "__main__":
    main()
