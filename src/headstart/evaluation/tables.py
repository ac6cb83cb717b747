"""Evaluation results as readable rich tables."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from headstart.console import shown
from headstart.evaluation.metrics import Evaluation

_MAX_CONFUSION_CLASSES = 20  # wider matrices do not fit a terminal; the JSON has them all


def evaluation_tables(evaluation: Evaluation) -> Group:
    headline = Table(title=f"Evaluation on the {evaluation.split} split", show_header=False)
    headline.add_row("images", str(evaluation.images))
    headline.add_row("top-1 accuracy", f"{evaluation.accuracy:.2%}")
    if evaluation.top5_accuracy is not None:
        headline.add_row("top-5 accuracy", f"{evaluation.top5_accuracy:.2%}")
    headline.add_row("mean cross entropy", f"{evaluation.cross_entropy:.4f}")
    if evaluation.skipped:
        headline.add_row("skipped (unreadable)", str(len(evaluation.skipped)))
    parts = [headline, _per_class(evaluation)]
    if len(evaluation.labels) <= _MAX_CONFUSION_CLASSES:
        parts.append(_confusion(evaluation))
    return Group(*parts)


def _per_class(evaluation: Evaluation) -> Table:
    table = Table(title="Per class")
    for column in ("class", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in evaluation.per_class:
        table.add_row(
            shown(row["label"]),
            *(_number(row[key]) for key in ("precision", "recall", "f1")),
            str(row["support"]),
        )
    return table


def _confusion(evaluation: Evaluation) -> Table:
    table = Table(title="Confusion matrix (rows: true, columns: predicted)")
    table.add_column("true \\ predicted")
    for label in evaluation.labels:
        table.add_column(shown(label), justify="right")
    for label, row in zip(evaluation.labels, evaluation.confusion, strict=True):
        cells = [
            f"[bold]{n}[/]" if i == evaluation.labels.index(label) else str(n)
            for i, n in enumerate(row)
        ]
        table.add_row(shown(label), *cells)
    return table


def _number(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"
