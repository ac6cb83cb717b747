"""Evaluation results as readable rich tables."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from headstart.console import shown
from headstart.evaluation.metrics import Evaluation
from headstart.evaluation.multilabel import MultiLabelEvaluation

_MAX_CONFUSION_CLASSES = 20  # wider matrices do not fit a terminal; the JSON has them all


def evaluation_tables(evaluation: Evaluation | MultiLabelEvaluation) -> Group:
    if isinstance(evaluation, MultiLabelEvaluation):
        return _multi_label_tables(evaluation)
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


def _multi_label_tables(evaluation: MultiLabelEvaluation) -> Group:
    headline = Table(
        title=f"Multi-label evaluation on the {evaluation.split} split", show_header=False
    )
    headline.add_row("images", str(evaluation.images))
    headline.add_row("mAP (mean average precision)", _number(evaluation.mAP))
    headline.add_row("micro F1", _number(evaluation.micro_f1))
    headline.add_row("macro F1", _number(evaluation.macro_f1))
    headline.add_row("exact set right", f"{evaluation.exact_match:.2%}")
    headline.add_row("Hamming loss", f"{evaluation.hamming_loss:.4f}")
    cardinality = f"{evaluation.label_cardinality:.2f} true, "
    headline.add_row(
        "labels a photo", cardinality + f"{evaluation.predicted_cardinality:.2f} given"
    )
    if evaluation.skipped:
        headline.add_row("skipped (unreadable)", str(len(evaluation.skipped)))
    table = Table(title="Per label (at the model's thresholds)")
    columns = ("label", "AP", "precision", "recall", "f1", "support", "threshold")
    for column in columns:
        table.add_column(column, justify="left" if column == "label" else "right")
    for row in evaluation.per_label:
        table.add_row(
            shown(row["label"]),
            *(_number(row[k]) for k in ("average_precision", "precision", "recall", "f1")),
            str(row["support"]),
            f"{row['threshold']:.3f}",
        )
    return Group(headline, table)


def _number(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"
