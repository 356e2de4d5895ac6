"""Parsing TOML input with errors a person can act on: ``file:line:column`` and what is
wrong, where tomlkit's own message is cryptic (an unclosed bracket at the end of the file
reads as "Unexpected character: '\\x00'" at column 0).

Two parsers: tomlkit keeps comments and order, for what is written back (the template's
globals, parsed only when a config is written); ``read_toml`` gives plain values through
tomllib (tomli before Python 3.11), several times faster, for what is only read (the
template's values, executor files, the config read back). A file the fast parser refuses
goes through tomlkit, so that the verdict and the message are tomlkit's, as they were
before there were two. tomlkit is imported only then: a steady start does without it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

if sys.version_info >= (3, 11):
    import tomllib as _fast  # novm: behind the version check
else:
    import tomli as _fast  # the backport, a dependency before 3.11

from .errors import InputError

if TYPE_CHECKING:
    import tomlkit


def parse_toml(path: Path, text: str) -> tomlkit.TOMLDocument:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        return tomlkit.parse(text)
    except TOMLKitError as error:
        message = re.sub(r" at line \d+ col \d+$", "", str(error))
        # tomlkit counts columns from 0 and says 0 when it cannot tell.
        line, col = getattr(error, "line", None), getattr(error, "col", 0) + 1
        duplicate = re.match(r'Key "(.+)" already exists', message)
        if duplicate:
            # tomlkit notices a duplicate only later on (or nowhere): find the line itself.
            line = _duplicate_line(text, duplicate.group(1), line)
            col = _column(text, line, duplicate.group(1))
        elif message == "Unexpected character: '\\x00'":
            # tomlkit reads past the end as a NUL character.
            line, col, message = _end_of_file(text)
        elif _BAD_VALUE.match(message):
            # tomlkit points past a bare word (`run_untagged = fals`) and names the next
            # character: the word is what the person typed.
            col, message = _bad_value(text, line, col) or (col, message)
        where = f"{path}:{line}:{col}" if line else str(path)
        raise InputError(f"{where}: invalid TOML: {message}") from None


def read_toml(path: Path, text: str) -> dict[str, Any]:
    """The document as plain values (dict, list, str, datetime...), for reading only."""
    try:
        return _fast.loads(text)
    except _fast.TOMLDecodeError:
        # tomlkit says what is wrong and where; it also accepts a few documents the strict
        # parser refuses (it did before this parser was added, so it still does).
        return parse_toml(path, text).unwrap()


_BAD_VALUE = re.compile(r"Unexpected character|Invalid (number|date|time|datetime)$")
_BARE_WORD = re.compile(r"[^\s=,\[\]{}#\"']+")
_ASSIGNED = re.compile(r"^\s*([^\s=#\[\]\"']+)\s*=\s*")


def _bad_value(text: str, line: Optional[int], col: int) -> Optional[tuple[int, str]]:
    """The column and description of the bare word at or just before ``col``, if any."""
    lines = text.splitlines()
    if not line or line > len(lines):
        return None
    current = lines[line - 1]
    for match in _BARE_WORD.finditer(current):
        if match.start() <= col - 1 <= match.end():
            word = match.group()
            assigned = _ASSIGNED.match(current)
            shown = (
                f"{assigned.group(1)} = {word}"
                if assigned and assigned.end() == match.start()
                else repr(word)
            )
            return match.start() + 1, (
                f"{shown}: not a TOML value (a string needs quotes; booleans are true or false)"
            )
    return None


def _column(text: str, line: Optional[int], key: str) -> int:
    if not line:
        return 1
    found = text.splitlines()[line - 1].find(key)
    return found + 1 if found >= 0 else 1


def _end_of_file(text: str) -> tuple[int, int, str]:
    """Where the file ends, and which bracket or quote is still open there."""
    opened = _unclosed(text)
    lines = text.splitlines() or [""]
    end_line, end_col = len(lines), len(lines[-1]) + 1
    if text.endswith("\n"):
        end_line, end_col = end_line + 1, 1
    if opened is None:
        return end_line, end_col, "unexpected end of file"
    char, line, col = opened
    return line, col, f"unexpected end of file: the {char} here is never closed"


def _unclosed(text: str) -> Optional[tuple[str, int, int]]:
    """The innermost bracket or quote still open at the end of ``text`` (a value's ``[``,
    ``{``, ``"`` or ``'``), with its line and column."""
    stack: list[tuple[str, int, int]] = []
    line, col, index = 1, 0, 0
    quote: Optional[str] = None
    while index < len(text):
        char = text[index]
        col += 1
        if quote is not None:
            if char == "\\" and quote == '"':
                index, col = index + 1, col + 1
            elif char == quote:
                quote = None
                stack.pop()
        elif char == "#":
            while index + 1 < len(text) and text[index + 1] != "\n":
                index += 1
        elif char in "\"'":
            quote = char
            stack.append((char, line, col))
        elif char in "[{":
            stack.append((char, line, col))
        elif char in "]}" and stack:
            stack.pop()
        if char == "\n":
            line, col = line + 1, 0
        index += 1
    return stack[-1] if stack else None


def _duplicate_line(text: str, key: str, before: Optional[int]) -> Optional[int]:
    """The line of the last assignment or header of ``key`` up to line ``before``, which is
    where a duplicate stands."""
    pattern = re.compile(rf"^\s*(\[+\s*([\w.\-\"' ]+\.)?)?[\"']?{re.escape(key)}[\"']?\s*(=|\])")
    lines = [n for n, line in enumerate(text.splitlines(), 1) if pattern.match(line)]
    candidates = [n for n in lines if before is None or n <= before]
    return candidates[-1] if len(lines) > 1 and candidates else before


class Located:
    """``locate(path, text, key)``, found only when printed: most files never need it."""

    __slots__ = ("key", "path", "text")

    def __init__(self, path: Path, text: str, key: str) -> None:
        self.path, self.text, self.key = path, text, key

    def __str__(self) -> str:
        return locate(self.path, self.text, self.key)

    __format__ = lambda self, spec: format(str(self), spec)  # noqa: E731


# Where a message points: ``path:line`` as text, or found when printed.
Where = Union[str, Located]


def locate(path: Path, text: str, key: str) -> str:
    """``path:line`` of the first place ``key`` is set, or just ``path``."""
    # [ \t], not \s: a match must not start on a blank line above the key.
    pattern = re.compile(
        rf"^[ \t]*(\[+[ \t]*)?[\"']?{re.escape(key)}[\"']?\s*(=|\]|\.)", re.MULTILINE
    )
    match = pattern.search(text)
    return f"{path}:{text.count(chr(10), 0, match.start()) + 1}" if match else str(path)


def remove_with_comments(document: tomlkit.TOMLDocument, key: str) -> None:
    """Remove a top-level ``key`` and the comment lines right above it, which describe it:
    left behind, they would describe nothing in the output. tomlkit files comments above a
    table header under the table before it, so they are looked for there too."""
    from tomlkit.items import Comment, Table, Whitespace

    body = document.body
    index = next(i for i, (k, _) in enumerate(body) if k is not None and k.key == key)
    start = index
    while start > 0 and body[start - 1][0] is None:
        start -= 1
    if start == index and index > 0 and isinstance(body[index - 1][1], Table):
        _drop_trailing_comments(body[index - 1][1].value.body)
    document.remove(key)
    if any(isinstance(item, Comment) for _, item in body[start:index]):
        del body[start:index]
        body.insert(start, (None, Whitespace("\n")))


def _drop_trailing_comments(body: list) -> None:
    from tomlkit.items import Comment, Whitespace

    end = len(body)
    while end > 0 and body[end - 1][0] is None:
        end -= 1
    if any(isinstance(item, Comment) for _, item in body[end:]):
        del body[end:]
        body.append((None, Whitespace("\n")))
