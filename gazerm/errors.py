"""The errors a user can fix: a config, an input file, a path, an argument.

Every gazerm command maps :class:`GazermError` to exit code 2 and a one-line message in one place
(``gazerm.cli``); any other exception is a bug and keeps its traceback. The subclasses also derive
from the built-in error a Python caller would expect (``ValueError``, ``FileNotFoundError``).
"""

from __future__ import annotations


class GazermError(Exception):
    """A problem with what the user gave gazerm, stated so they can fix it."""


class ConfigError(GazermError, ValueError):
    """A config file, override, argument or model directory that does not fit; the message names it."""


class PathNotFoundError(GazermError, FileNotFoundError):
    """A file or directory the user named is not there (or is not what gazerm wrote)."""


class ExistsError(GazermError, FileExistsError):
    """An output that exists already and would be overwritten; the message says how to replace it."""
