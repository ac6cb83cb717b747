"""Errors that reach the user as one clear line instead of a traceback."""

import re


class HeadstartError(Exception):
    """A problem with the user's input, data or environment, described in one line."""


class SettingError(HeadstartError, ValueError):
    """A setting outside its allowed values: a usage error (exit code 2 on the command line).

    The message names the parameter as the API spells it (`epochs must be in [1, 100000], not
    0`); `for_command_line` names the flag instead (`--epochs must be ...`)."""

    def __init__(self, message: str, flags: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.flags = flags or {}  # parameter name -> its command-line flag

    def for_command_line(self) -> str:
        text = str(self)
        for parameter, flag in self.flags.items():
            text = re.sub(rf"\b{re.escape(parameter)}\b", flag, text)
        return text
