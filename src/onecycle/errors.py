"""The one exception every entry point turns into `onecycle: error: ...` (exit status 2).

It lives alone, without pydantic or torch, so that `onecycle --help` and the CLI's error
handling import nothing heavy (onecycle.cli imports the rest only once a command runs).
"""

from __future__ import annotations

from typing import Any

# An error names a value by an excerpt of at most this many characters, and is one line of at
# most MAX_MESSAGE_CHARS: a hostile value (a 4 MiB string) must not flood a terminal or a log.
MAX_EXCERPT_CHARS = 80
MAX_MESSAGE_CHARS = 1000


def excerpt(value: Any, limit: int = MAX_EXCERPT_CHARS) -> str:
    """repr(value), cut to `limit` characters with '...' where it was cut."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def one_line(message: str) -> str:
    """`message` on one line of at most MAX_MESSAGE_CHARS characters."""
    line = " ".join(str(message).splitlines())
    return line if len(line) <= MAX_MESSAGE_CHARS else f"{line[:MAX_MESSAGE_CHARS - 3]}..."


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key path and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))
