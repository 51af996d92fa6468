"""The tools' one line rule for text files (docs/translate.md): only b"\\n" ends a line, a "\\r"
before it and a UTF-8 BOM at the start are dropped, and a line that is not UTF-8 is an error naming
the file and the line. Shared by the translate and score tools."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from ..errors import UserError

__all__ = ["count_lines", "decoded_lines"]


def decoded_lines(stream: BinaryIO, name: str, done: str = "translated") -> Iterator[str]:
    """The lines of a byte stream as text: only b"\\n" ends a line, a "\\r" before it and a UTF-8 BOM
    at the start are dropped; a line that is not UTF-8 (or holds a NUL byte, binary data) is a
    UserError naming `name` and the line, saying the lines before it were `done`."""
    for number, raw in enumerate(stream, start=1):
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if b"\0" in raw:
            raise UserError(
                f"{name}, line {number}: a NUL byte, binary data and not text; the lines before "
                f"it were {done}. Pass a UTF-8 text file, one sentence per line."
            )
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(
                f"{name}, line {number}: not UTF-8 ({err.reason} at byte {err.start}); the "
                f"lines before it were {done}. Convert the input to UTF-8 (e.g. iconv)."
            ) from None


def count_lines(path: str) -> int:
    """Lines in a file by the tools' rule (only b"\\n" ends one; a last line without it counts)."""
    count, last = 0, b"\n"
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")
