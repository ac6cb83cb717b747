"""The report page: one HTML file with everything inlined, so it opens offline anywhere."""

from __future__ import annotations

import base64
from html import escape
from typing import Any

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem;
       color: #222; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.cards { display: flex; flex-wrap: wrap; gap: .8rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6rem 1rem; min-width: 9rem; }
.card b { display: block; font-size: 1.4rem; }
img.figure { max-width: 100%; height: auto; }
table { border-collapse: collapse; }
td, th { padding: .25rem .6rem; border-bottom: 1px solid #eee; }
th { cursor: pointer; text-align: left; background: #f6f8fa; } td.n { text-align: right; }
.gallery { display: flex; flex-wrap: wrap; gap: .8rem; }
.gallery figure { margin: 0; width: 140px; font-size: .8rem; }
.gallery img { width: 128px; height: 128px; object-fit: cover; border-radius: 4px; }
.gallery img.near { width: 40px; height: 40px; margin: 2px 2px 0 0; }
.gallery span.near { color: #666; font-size: .7rem; }
"""

_SORT = """
document.querySelectorAll("table.sortable th").forEach(th => {
  th.addEventListener("click", () => {
    const column = th.cellIndex;  // within its own table, whatever tables come before
    const body = th.closest("table").tBodies[0];
    const rows = [...body.rows];
    const ascending = th.dataset.order !== "asc";
    th.dataset.order = ascending ? "asc" : "desc";
    const key = row => {
      const text = row.cells[column].textContent;
      const number = parseFloat(text);
      return isNaN(number) ? text : number;
    };
    rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (ascending ? 1 : -1));
    body.append(...rows);
  });
});
"""


def report_page(
    title: str, numbers: dict[str, Any], pngs: dict[str, bytes], galleries: dict
) -> str:
    parts = [
        f"<h1>{escape(title)}</h1>",
        f"<p>{escape(numbers['backbone'].get('name', ''))} backbone, "
        f"{escape(str(numbers.get('strategy') or 'linear'))} head. "
        f"<b>{escape(numbers.get('scope') or numbers['split'])}</b>.</p>",
        _cards(numbers),
        "<h2>Confusion matrix</h2>",
        _image(pngs["confusion_counts"], "confusion matrix, counts"),
        _image(pngs["confusion_normalised"], "confusion matrix, row-normalised"),
        _most_confused(numbers["most_confused"]),
        "<h2>Per class</h2><p>Click a column to sort.</p>",
        _per_class(numbers["per_class"], numbers["train_per_class"]),
        _image(pngs["accuracy_vs_training_images"], "accuracy against training images"),
        "<h2>Calibration</h2>",
        _calibration(numbers["calibration"]),
        _image(pngs["reliability"], "reliability diagram"),
    ]
    parts += _training_curves(pngs)
    for name, items in galleries.items():
        parts += [f"<h2>{escape(name)}</h2>", _heat_map_note(items), _gallery(items)]
    return _page(title, parts)


def _training_curves(pngs: dict[str, bytes]) -> list[str]:
    if "training_curves" not in pngs:
        return []
    return ["<h2>Training curves</h2>", _image(pngs["training_curves"], "training curves")]


def _page(title: str, parts: list[str]) -> str:
    """The whole document: the parts, the style and the table sorter, nothing from elsewhere."""
    body = "\n".join(parts)
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>\n{body}\n<script>{_SORT}</script></body></html>\n"
    )


def _cards(numbers: dict[str, Any]) -> str:
    cards = [
        ("top-1 accuracy", f"{numbers['accuracy']:.2%}"),
        ("balanced accuracy", f"{numbers['balanced_accuracy']:.2%}"),
        ("mean cross entropy", f"{numbers['cross_entropy']:.4f}"),
        ("images evaluated", str(numbers["images"])),
    ]
    if numbers.get("top5_accuracy") is not None:
        cards.insert(1, ("top-5 accuracy", f"{numbers['top5_accuracy']:.2%}"))
    split_counts = ", ".join(f"{k} {v}" for k, v in numbers["images_per_split"].items())
    cards.append(("trained on (images per split)", split_counts))
    if numbers.get("training_seconds") is not None:
        cards.append(("training time", f"{numbers['training_seconds']:.1f} s"))
    if numbers.get("skipped"):
        cards.append(("unreadable, skipped", str(len(numbers["skipped"]))))
    items = "".join(f"<div class='card'>{escape(k)}<b>{escape(v)}</b></div>" for k, v in cards)
    return f"<div class='cards'>{items}</div>"


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f"<p><img class='figure' alt='{escape(alt)}' src='data:image/png;base64,{data}'></p>"


def _most_confused(pairs: list[dict]) -> str:
    if not pairs:
        return "<p>No confusions.</p>"
    rows = "".join(
        f"<tr><td>{escape(p['true'])}</td><td>{escape(p['predicted'])}</td>"
        f"<td class='n'>{p['count']}</td></tr>"
        for p in pairs
    )
    return (
        "<h3>Most confused pairs</h3><table class='sortable'><thead><tr><th>true</th>"
        f"<th>predicted as</th><th>images</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _score(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _per_class(per_class: list[dict], train_counts: dict) -> str:
    rows = "".join(
        f"<tr><td>{escape(r['label'])}</td><td class='n'>{_score(r['precision'])}</td>"
        f"<td class='n'>{_score(r['recall'])}</td><td class='n'>{_score(r['f1'])}</td>"
        f"<td class='n'>{r['support']}</td>"
        f"<td class='n'>{train_counts.get(r['label'], 0)}</td></tr>"
        for r in per_class
    )
    head = "".join(
        f"<th>{name}</th>"
        for name in ("class", "precision", "recall", "F1", "support", "train images")
    )
    return f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _calibration(calibration: dict) -> str:
    fitted = calibration.get("fitted_on_validation") or {}
    text = (
        f"<p>Temperature {calibration['temperature']:.3f}, fitted on the validation split and used "
        f"by predict. Expected calibration error on this split: "
        f"{calibration['ece_before']:.4f} before, <b>{calibration['ece_after']:.4f}</b> after."
    )
    if fitted:
        text += (
            f" On the validation split, NLL went from {fitted['val_nll_before']:.4f} to "
            f"{fitted['val_nll_after']:.4f}."
        )
    return text + "</p>"


def _heat_map_note(items: list[dict]) -> str:
    if not any(item.get("heat_map") for item in items):
        return ""
    return (
        "<p>Over each photo, its predicted label's heat map: red where the photo speaks for "
        "that label, blue where it speaks against it; grey: outside what the model sees.</p>"
    )


def _neighbours(neighbours: list[dict]) -> str:
    """The nearest training photos, small, each titled with its label and similarity."""
    if not neighbours:
        return ""
    pictures = "".join(
        f"<img class='near' alt='{escape(n['label'])}' "
        f"title='{escape(n['label'])} {n['similarity']:.2f}: {escape(n['path'])}' "
        f"src='data:image/jpeg;base64,{n['thumbnail']}'>"
        for n in neighbours
    )
    return f"<br><span class='near'>nearest training photos</span><br>{pictures}"


def _gallery(items: list[dict]) -> str:
    if not items:
        return "<p>None.</p>"
    figures = "".join(
        f"<figure title='{escape(item['path'])}'>"
        f"<img alt='{escape(item['true'])}' src='data:image/jpeg;base64,{item['thumbnail']}'>"
        f"<figcaption>true <b>{escape(item['true'])}</b><br>predicted "
        f"<b>{escape(item['predicted'])}</b> {item['probability']:.1%}"
        f"{_neighbours(item.get('neighbours', []))}</figcaption></figure>"
        for item in items
    )
    return f"<div class='gallery'>{figures}</div>"


def multi_label_page(
    title: str, numbers: dict[str, Any], pngs: dict[str, bytes], galleries: dict
) -> str:
    """A multi-label model's report: its scores, each label's results and curve, calibration
    and each label's worst mistakes."""
    parts = [
        f"<h1>{escape(title)}</h1>",
        f"<p>{escape(numbers['backbone'].get('name', ''))} backbone, "
        f"{escape(str(numbers.get('strategy') or 'linear'))} head, a sigmoid and a threshold "
        f"a label. <b>{escape(numbers.get('scope') or numbers['split'])}</b>.</p>",
        _multi_label_cards(numbers),
        "<h2>Per label</h2><p>At each label's threshold, chosen on validation to maximise its "
        "F1. Click a column to sort.</p>",
        _per_label(numbers["per_label"], numbers["train_per_class"]),
        _image(pngs["precision_recall"], "precision-recall curves"),
        "<h2>Calibration</h2>",
        _calibration(numbers["calibration"]),
        "<p>Every (photo, label) probability is a confidence here.</p>",
        _image(pngs["reliability"], "reliability diagram"),
    ]
    parts += [*_training_curves(pngs), "<h2>Worst mistakes per label</h2>"]
    if len(galleries) < len(numbers["per_label"]):
        parts.append(
            f"<p>For the {len(galleries)} labels of {len(numbers['per_label'])} with the lowest "
            "average precision.</p>"
        )
    for label, items in galleries.items():
        parts += [f"<h3>{escape(label)}</h3>", _label_gallery(items)]
    if any(item.get("heat_map") for items in galleries.values() for item in items):
        parts.insert(
            -len(galleries) * 2,
            "<p>Over each photo, that label's heat map: red where the photo speaks for the "
            "label, blue where it speaks against it.</p>",
        )
    return _page(title, parts)


def _multi_label_cards(numbers: dict[str, Any]) -> str:
    given = numbers["predicted_cardinality"]
    cards = [
        ("mAP", _score(numbers["mAP"])),
        ("micro F1", _score(numbers["micro_f1"])),
        ("macro F1", _score(numbers["macro_f1"])),
        ("exact set right", f"{numbers['exact_match']:.2%}"),
        ("Hamming loss", f"{numbers['hamming_loss']:.4f}"),
        ("labels a photo", f"{numbers['label_cardinality']:.2f} true, {given:.2f} given"),
        ("images evaluated", str(numbers["images"])),
    ]
    split_counts = ", ".join(f"{k} {v}" for k, v in numbers["images_per_split"].items())
    cards.append(("trained on (images per split)", split_counts))
    if numbers.get("skipped"):
        cards.append(("unreadable, skipped", str(len(numbers["skipped"]))))
    items = "".join(f"<div class='card'>{escape(k)}<b>{escape(v)}</b></div>" for k, v in cards)
    return f"<div class='cards'>{items}</div>"


def _per_label(per_label: list[dict], train_counts: dict) -> str:
    columns = ("average_precision", "precision", "recall", "f1")
    rows = "".join(
        f"<tr><td>{escape(r['label'])}</td>"
        + "".join(f"<td class='n'>{_score(r[key])}</td>" for key in columns)
        + f"<td class='n'>{r['support']}</td><td class='n'>{r['threshold']:.3f}</td>"
        f"<td class='n'>{train_counts.get(r['label'], 0)}</td></tr>"
        for r in per_label
    )
    names = ("label", "AP", "precision", "recall", "F1", "support", "threshold", "train images")
    head = "".join(f"<th>{name}</th>" for name in names)
    return f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _label_gallery(items: list[dict]) -> str:
    if not items:
        return "<p>No mistakes.</p>"
    figures = "".join(
        f"<figure title='{escape(item['path'])}'>"
        f"<img alt='{escape(item['true'])}' src='data:image/jpeg;base64,{item['thumbnail']}'>"
        f"<figcaption><b>{escape(item['mistake'])}</b>: {escape(item['label'])} "
        f"{item['probability']:.1%}<br>true: {escape(item['true'])}</figcaption></figure>"
        for item in items
    )
    return f"<div class='gallery'>{figures}</div>"
