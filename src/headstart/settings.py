"""Settings declared once: each field carries its default, its allowed values and its help.

The CLI reads the help and the defaults from here (tests/test_hostile_cli.py checks it does), and
`check_settings` refuses any value outside the declared range before work starts, with the
option, the value and the range: exit 2 on the command line, a SettingError in the API.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import reprlib
from collections.abc import Callable
from typing import Any, cast

from headstart.errors import SettingError

Check = Callable[[Any], "str | None"]


class Choice(str, enum.Enum):
    """A closed choice; its members compare equal to their text, so records stay plain JSON."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)


class Strategy(Choice):
    LINEAR = "linear"
    MLP = "mlp"
    FINETUNE = "finetune"
    AUTO = "auto"


class Augment(Choice):
    NONE = "none"
    LIGHT = "light"
    STRONG = "strong"


class FreezeBN(Choice):
    AUTO = "auto"
    YES = "yes"
    NO = "no"


class Device(Choice):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class EngineName(Choice):
    AUTO = "auto"
    ONNX = "onnx"
    TORCH = "torch"


class PresetName(Choice):
    FAST = "fast"
    BALANCED = "balanced"
    BEST = "best"


class SplitName(Choice):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


def setting(
    default: Any = dataclasses.MISSING,
    check: Check | None = None,
    help: str = "",
    flag: str | None = None,
) -> Any:
    """A dataclass field with its constraint, its help text and (if not derived) its flag."""
    metadata = {"check": check, "help": help, "flag": flag}
    return dataclasses.field(default=default, metadata=metadata)


def first_problem(settings: Any) -> tuple[dataclasses.Field, str] | None:
    """The first field outside its allowed values, and what is wrong with it."""
    for field in dataclasses.fields(settings):
        check = field.metadata.get("check")
        value = getattr(settings, field.name)
        problem = check(value) if check else None
        if problem:
            return field, f"{problem}, not {reprlib.repr(value)}"  # a long value, shortened
    return None


def as_choices(settings: Any) -> None:
    """Each closed-choice field given as its text becomes its enum member (a value outside
    the choice is left for `check_settings` to name)."""
    for field in dataclasses.fields(settings):
        kind = getattr(field.metadata.get("check"), "choices", None)
        value = getattr(settings, field.name)
        if kind is not None and not isinstance(value, kind) and value in kind.names():
            object.__setattr__(settings, field.name, kind(value))  # frozen ones too


def check_settings(settings: Any) -> None:
    """Raise SettingError naming the option of the first field outside its allowed values."""
    found = first_problem(settings)
    if found:
        field, problem = found
        raise SettingError(f"{field.name} {problem}", {field.name: option_flag(field)})


def option_flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def help_text(settings_class: type, name: str) -> str:
    """The field's help, with its allowed values, as the CLI shows it."""
    field = next(f for f in dataclasses.fields(settings_class) if f.name == name)
    allowed = getattr(field.metadata["check"], "allowed", None)
    return field.metadata["help"] + (f" (in {allowed})" if allowed else "")


def choice(kind: type[Choice]) -> Check:
    """A check for one of `kind`'s values; the check keeps `kind` as `choices`, so that the CLI
    offers the same closed choice."""

    def check(value: Any) -> str | None:
        return None if value in kind.names() else f"must be one of {', '.join(kind.names())}"

    check.choices = kind  # type: ignore[attr-defined]
    return check


def number(
    low: float, high: float = math.inf, *, low_open: bool = False, kind: type = int
) -> Check:
    """A check for a number in [low, high] (or (low, high] with low_open) of the given kind."""

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (kind, int)):
            return f"must be {'a whole number' if kind is int else 'a number'}"
        amount = cast(float, value)  # an int or a `kind`, checked above
        if not math.isfinite(amount) or not low <= amount <= high or (low_open and amount == low):
            return f"must be in {allowed}"
        return None

    opening = "(" if low_open else "["
    allowed = f"{opening}{low}, {'inf' if high == math.inf else high}]"
    check.allowed = allowed  # type: ignore[attr-defined]  # read by help_text
    return check


def optional_text(value: Any) -> str | None:
    """None, or text that is not blank."""
    if value is None or (isinstance(value, str) and value.strip()):
        return None
    return "must be a non-empty name"


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def duration(value: Any) -> str | None:
    try:
        seconds = parse_duration(value)
    except SettingError:
        return "must be a duration such as 90s, 5m or 1h"
    return None if seconds > 0 else "must be longer than 0 s"


def parse_duration(text: str) -> float:
    """Seconds in '90', '90s', '5m', '1.5h'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not match:
        raise SettingError(f"cannot read the duration {text!r}: use e.g. 90s, 5m or 1h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600}[unit]
