"""The base class of errors a user can cause (bad path, corrupt video, unknown config key, ...).

The command line turns these into one clear message and a non-zero exit code instead of a
traceback; library callers can catch them by this one type.
"""


class LatentveilError(Exception):
    """An error the user can fix; its message names the thing and what is wrong."""


class PathError(LatentveilError):
    """An output path that cannot be written as asked: a folder where a file goes (or a file
    where a folder goes), or a folder without write permission."""
