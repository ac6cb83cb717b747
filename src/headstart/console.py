"""Progress bars and tables on stderr, shared by the API (when asked) and the CLI."""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape

stderr = Console(stderr=True)
# Bidi embeddings, overrides and isolates: they reorder what follows them on the screen.
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def visible(text: str) -> str:
    """Text as plain characters: control characters, bidi overrides and the lone surrogates
    of a file name that is not UTF-8 as visible escapes (a name holding ESC sequences cannot
    recolour, hide, relink or retitle anything; a figure's font draws every character)."""
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if c in _BIDI or unicodedata.category(c) in ("Cc", "Cs")
        else c
        for c in str(text)
    )


def shown(text: str) -> str:
    """Text for the terminal: `visible`, with rich markup escaped."""
    return escape(visible(text))


def warn(message: str) -> None:
    """One line on stderr for something the user should know that does not stop the run."""
    stderr.print(f"[yellow]warning:[/] {shown(message)}", highlight=False, soft_wrap=True)


def _ignore(advance: int = 1) -> None:
    pass


@contextmanager
def progress_bar(description: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; draws a rich progress bar on stderr when enabled."""
    if not enabled or total <= 0:
        yield _ignore
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield functools.partial(progress.advance, task)
