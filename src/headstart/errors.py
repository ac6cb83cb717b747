"""Errors that reach the user as one clear line instead of a traceback."""


class HeadstartError(Exception):
    """A problem with the user's input, data or environment, described in one line."""
