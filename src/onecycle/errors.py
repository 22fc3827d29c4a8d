"""The one exception every entry point turns into `onecycle: error: ...` (exit status 2).

It lives alone, without pydantic or torch, so that `onecycle --help` and the CLI's error
handling import nothing heavy (onecycle.cli imports the rest only once a command runs).
"""


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key path and the fix."""
