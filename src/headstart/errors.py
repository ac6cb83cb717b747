"""Errors that reach the user as one clear line instead of a traceback."""


class HeadstartError(Exception):
    """A problem with the user's input, data or environment, described in one line."""


class SettingError(HeadstartError, ValueError):
    """A setting outside its allowed values: a usage error (exit code 2 on the command line)."""
