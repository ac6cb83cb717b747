"""A seeded fuzzer for names: class and file names built from the pieces that attack a reader
(terminal escapes, C0 and C1 controls, bidi overrides, spreadsheet formulas, `$` for
matplotlib, HTML, line breaks, quotes, lone surrogates from non-UTF-8 file names) sent through
every writer headstart has: the terminal, CSV cells, the report's HTML, the labels file and
the ONNX metadata, and matplotlib's text. Run as a script:

    python tests/fuzz_names.py --seconds 600

It prints one JSON line: names tried, how many each writer took or refused, and the escapes
(a writer whose output lets the name act, or whose reader gets another name back).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import time
import unicodedata
from html.parser import HTMLParser

PIECES = [
    "\x1b[31m", "\x1b]8;;http://evil.example/\x07", "\x1b]0;title\x07", "\x1b[8m", "\x1b[2J",
    "\x07", "\x00", "\t", "\r", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x7f", "\x85", "\x9b",
    "\u2028", "\u2029", "\u202e", "\u202d", "\u2066", "\u2069", "\u200e", "\u200f",
    "=", "+", "-", "@", "'", "=HYPERLINK(\"http://x\")", "=1+2", "-2+3", "@SUM(A1)", "'=",
    "$", "$$", "$^$", "\\", "\\frac", "_", "^", "{", "}", "%",
    "<script>alert(1)</script>", "<b>", "</td>", "&amp;", "&", "\"", "'", "`", "<!--",
    "[red]", "[/]", "[link=http://x]", ":smile:",
    "\udcff", "\udc80", "daisy", "sunflower", "a b", "ñ", "日本", "🌻", "e\u0301", "0", "-1.5",
    " ", "",
]  # fmt: skip
BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def hostile_name(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 6)))


def terminal_escape(name: str) -> str | None:
    """What the terminal shows: no control character, no bidi override."""
    from rich.console import Console
    from rich.table import Table

    from headstart.console import shown

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=False, width=100, color_system=None)
    console.print(f"[red]error:[/] {shown(name)}", highlight=False, soft_wrap=True)
    table = Table("name")
    table.add_row(shown(name))
    console.print(table)
    text = screen.getvalue()
    bad = [c for c in text if (unicodedata.category(c) == "Cc" and c != "\n") or c in BIDI]
    return f"terminal shows {bad[:3]!r}" if bad else None


def csv_escape(name: str) -> str | None:
    """A CSV cell: no spreadsheet formula, and headstart reads the name back."""
    from headstart.storage import FORMULA_START, SafeCsvWriter, unquoted

    buffer = io.StringIO()
    SafeCsvWriter(buffer, lineterminator="\n").writerow([name, "x"])
    cell = next(csv.reader(io.StringIO(buffer.getvalue())))[0]
    if cell.startswith(FORMULA_START):
        try:
            float(cell)
        except ValueError:
            return f"formula cell {cell[:20]!r}"
    return None if unquoted(cell) == name else f"read back as {unquoted(cell)[:20]!r}"


class _Parsed(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)
        self.attributes += [value or "" for _, value in attrs]

    def handle_data(self, data) -> None:
        self.text.append(data)

    def handle_comment(self, data) -> None:
        self.tags.append("<!--")


def html_escape(name: str) -> str | None:
    """The report's gallery and tables: the name adds no tag, and reads back as itself."""
    for hostile, benign in zip(_report_html(name), _report_html("N"), strict=True):
        parsed, plain = _Parsed(), _Parsed()
        parsed.feed(hostile)
        plain.feed(benign)
        if parsed.tags != plain.tags:
            return f"HTML tags {parsed.tags} for {plain.tags}"
        if name and not any(name in piece for piece in parsed.text + parsed.attributes):
            return "HTML does not read back as the name"
    return None


def _report_html(name: str) -> list[str]:
    from headstart.evaluation.html import _gallery, _most_confused

    item = {"path": name, "true": name, "predicted": name, "probability": 0.5, "thumbnail": ""}
    return [_gallery([item]), _most_confused([{"true": name, "predicted": name, "count": 1}])]


def labels_escape(name: str) -> str | None:
    """A label the record accepts comes back whole from the labels file and the metadata."""
    from headstart.export.onnx import labels_file
    from headstart.model.record import class_names

    labels = [name, "other"]
    if class_names(labels) is not None:
        return None  # refused at training, with a message naming it
    try:
        written = labels_file(labels)
        metadata = json.dumps(labels).encode("utf-8")
    except UnicodeError as error:
        return f"labels not writable: {error}"
    lines = written.decode("utf-8", "surrogateescape").splitlines()
    if lines != labels:
        return f"labels file reads back {lines!r}"
    if json.loads(metadata) != labels:
        return "metadata reads back another list"
    return None


def figure_escape(name: str) -> str | None:
    """The report's confusion matrix draws the name as text (no math parsing of `$`)."""
    import numpy as np

    from headstart.evaluation.figures import confusion_figure

    try:
        png = confusion_figure(np.array([[3, 1], [0, 4]]), [name, "other"], normalised=False)
    except Exception as error:  # what D8 was: a crash drawing the report
        return f"matplotlib: {type(error).__name__}: {str(error)[:80]}"
    return None if png.startswith(b"\x89PNG") else "not a PNG"


WRITERS = {
    "terminal": terminal_escape,
    "csv": csv_escape,
    "html": html_escape,
    "labels": labels_escape,
    "figure": figure_escape,
}


def run(seconds: float, seed: int) -> dict:
    import warnings

    warnings.simplefilter("ignore")  # matplotlib's "glyph missing" for every odd character
    rng = random.Random(seed)
    escaped: list[str] = []
    checked = dict.fromkeys(WRITERS, 0)
    names = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        name = hostile_name(rng)
        names += 1
        for writer, check in WRITERS.items():
            if writer == "figure" and names % 20:  # drawing is slow: every 20th name
                continue
            try:
                problem = check(name)
            except Exception as error:  # a writer that raises is an escape too
                problem = f"{type(error).__name__}: {error}"
            checked[writer] += 1
            if problem:
                escaped.append(f"{writer}: {name!r}: {problem}")
    return {"names": names, "checked": checked, "escaped": escaped[:50], "escapes": len(escaped)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    print(json.dumps(run(options.seconds, options.seed)))


if __name__ == "__main__":
    main()
