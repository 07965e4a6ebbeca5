"""Every `# type: ignore` in the code names its error code and says why it is there.

mypy's `ignore-without-code` catches a bare ignore, but nothing catches a silent one: this
test does, so an ignore stays a reviewed decision and not a way to quiet the checker.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("services", "shared", "tranche", "bench")

IGNORE = re.compile(r"type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)")
REASON = re.compile(r"#\s*\S")


def unexplained_ignores(source: str) -> list[tuple[int, str]]:
    """(line, problem) for each ignore without an error code or without a reason.

    The reason follows on the same line (`# type: ignore[code]  # why`), or, when that line would
    pass 100 columns, is a comment line just above it.
    """
    comments: dict[int, str] = {}
    alone: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row = token.start[0]
            comments[row] = token.string
            if not token.line[: token.start[1]].strip():
                alone.add(row)
    problems: list[tuple[int, str]] = []
    for row, comment in sorted(comments.items()):
        found = IGNORE.search(comment)
        if found is None:
            continue
        if not found.group("codes") or found.group("codes") == "[]":
            problems.append((row, "no error code"))
        elif not REASON.match(found.group("rest").strip()) and (row - 1) not in alone:
            problems.append((row, "no reason"))
    return problems


def test_checker_finds_a_bare_or_silent_ignore() -> None:
    source = (
        "a = f()  # type: ignore\n"
        "b = f()  # type: ignore[arg-type]\n"
        "c = f()  # type: ignore[arg-type]  # the SDK is untyped\n"
        "# the SDK is untyped\n"
        "d = f()  # type: ignore[arg-type]\n"
        "e = f()  # type: ignore[arg-type]  #\n"
    )
    assert unexplained_ignores(source) == [
        (1, "no error code"),
        (2, "no reason"),
        (6, "no reason"),
    ]


def test_every_type_ignore_has_a_code_and_a_reason() -> None:
    problems = [
        f"{path.relative_to(ROOT)}:{row}: {problem}"
        for folder in CHECKED
        if (ROOT / folder).is_dir()
        for path in sorted((ROOT / folder).rglob("*.py"))
        for row, problem in unexplained_ignores(path.read_text())
    ]
    assert not problems, "say why after the ignore (`# type: ignore[code]  # why`):\n" + "\n".join(
        problems
    )


def uncommented_overrides(pyproject: str) -> list[str]:
    """The first module of each `[[tool.mypy.overrides]]` entry that does not open with a comment
    (on the line under the header) saying why the entry exists."""
    entries = pyproject.split("[[tool.mypy.overrides]]")[1:]
    return [entry.split('"')[1] for entry in entries if not entry.lstrip("\n").startswith("#")]


def test_every_mypy_override_says_why() -> None:
    assert uncommented_overrides('[[tool.mypy.overrides]]\nmodule = ["a"]\n') == ["a"]
    missing = uncommented_overrides((ROOT / "pyproject.toml").read_text())
    assert not missing, f"say why in a comment under [[tool.mypy.overrides]]: {missing}"
