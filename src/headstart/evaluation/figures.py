"""The report's figures, drawn with matplotlib (Agg) in one consistent style, as PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from headstart.console import visible

BLUE, ORANGE, GREY = "#3a7bd5", "#e8833a", "#9aa5b1"


def _figure(width: float, height: float, columns: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "font.size": 9,
            "text.parse_math": False,  # class names are text: "cost_$5_to_$10" is no formula
        }
    )
    return plt.subplots(1, columns, figsize=(width, height), dpi=110)


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        figure.tight_layout()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def confusion_figure(confusion: np.ndarray, labels: list[str], normalised: bool) -> bytes:
    """Counts or row-normalised; stays readable from 2 to a few hundred classes."""
    n = len(labels)
    labels = [visible(label) for label in labels]
    values = confusion / np.maximum(confusion.sum(1, keepdims=True), 1) if normalised else confusion
    side = min(max(4.5, 1.5 + 0.2 * n), 40.0)
    figure, axes = _figure(side, side * 0.9)
    image = axes.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalised else None)
    axes.grid(False)
    row_points = side * 0.75 * 72 / max(n, 1)  # height of one row in the plot, in points
    font = max(4.0, min(9.0, 0.5 * row_points))
    axes.set_xticks(range(n), labels, rotation=90, fontsize=font)
    axes.set_yticks(range(n), labels, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix, " + ("row-normalised" if normalised else "counts"))
    if n <= 20:
        for (row, column), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalised else str(int(value))
            dark = value > values.max() / 2
            axes.text(
                column, row, text, ha="center", va="center", color="white" if dark else "black"
            )
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    return _png(figure)


def accuracy_vs_images_figure(per_class: list[dict[str, Any]], train_counts: dict) -> bytes:
    figure, axes = _figure(6, 4)
    per_class = [row for row in per_class if row["recall"] is not None]  # classes scored
    x = [train_counts.get(row["label"], 0) for row in per_class]
    y = [row["recall"] for row in per_class]
    axes.scatter(x, y, color=BLUE, alpha=0.8)
    if len(per_class) <= 30:
        for xi, yi, row in zip(x, y, per_class, strict=True):
            axes.annotate(
                visible(row["label"]),
                (xi, yi),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    axes.set_xlabel("training images of the class")
    axes.set_ylabel("accuracy on the class (recall)")
    axes.set_ylim(-0.03, 1.03)
    axes.set_title("Accuracy per class against its number of training images")
    return _png(figure)


def reliability_figure(
    before: list[dict],
    after: list[dict],
    temperature: float,
    confidence: str = "confidence (top probability)",
) -> bytes:
    figure, axes = _figure(5, 4.5)
    axes.plot([0, 1], [0, 1], color=GREY, linestyle="--", label="perfect calibration")
    for rows, colour, name in (
        (before, ORANGE, "uncalibrated"),
        (after, BLUE, f"T = {temperature:.2f}"),
    ):
        axes.plot(
            [r["confidence"] for r in rows],
            [r["accuracy"] for r in rows],
            "o-",
            color=colour,
            label=name,
        )
    axes.set_xlabel(confidence)
    axes.set_ylabel("accuracy")
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.02)
    axes.legend(loc="upper left")
    axes.set_title("Reliability diagram")
    return _png(figure)


def training_curves_figure(history: list[dict[str, float]]) -> bytes:
    """Loss and accuracy per epoch, or along the L2 path for a linear head (strongest first)."""
    figure, (loss, accuracy) = _figure(9, 3.6, columns=2)
    path = "l2" in history[0]
    steps = [h["l2"] if path else h["epoch"] for h in history]
    marker = "o" if path else None
    for axes, key, title in ((loss, "loss", "Loss"), (accuracy, "accuracy", "Accuracy")):
        for split, colour, name in (("train", ORANGE, "train"), ("val", BLUE, "validation")):
            if f"{split}_{key}" in history[0]:
                values = [h[f"{split}_{key}"] for h in history]
                axes.plot(steps, values, color=colour, label=name, marker=marker)
        if path:
            from matplotlib.ticker import FuncFormatter

            axes.set_xscale("log")
            axes.invert_xaxis()
            # plain numbers: with text.parse_math off, the default ticks show as TeX source
            axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.set_xlabel("L2 strength (weaker to the right)" if path else "epoch")
        axes.set_title(title)
        axes.legend()
    return _png(figure)


def precision_recall_figure(
    curves: list[tuple[str, np.ndarray, np.ndarray, float | None]],
    operating: list[tuple[float, float]],
) -> bytes:
    """Each label's precision-recall curve (name, precision, recall, AP), with the point its
    threshold gives (recall, precision) marked."""
    import matplotlib.pyplot as plt

    figure, axes = _figure(6, 4.8)
    colours = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    for index, ((name, precision, recall, ap), point) in enumerate(
        zip(curves, operating, strict=True)
    ):
        colour = colours(index % colours.N)
        shown = f"{visible(name)} (AP {ap:.3f})" if ap is not None else visible(name)
        axes.plot(recall, precision, color=colour, label=shown, drawstyle="steps-post")
        axes.plot(*point, "o", color=colour)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.02)
    axes.set_title("Precision-recall per label (dots: at the model's thresholds)")
    if len(curves) <= 20:  # more would hide the curves
        axes.legend(loc="lower left", fontsize=7)
    return _png(figure)
