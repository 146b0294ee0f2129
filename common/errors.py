"""The base class of errors a user can cause (bad path, corrupt video, unknown config key, ...).

The command line turns these into one clear message and a non-zero exit code instead of a
traceback; library callers can catch them by this one type.
"""


class LatentveilError(Exception):
    """An error the user can fix; its message names the thing and what is wrong."""
