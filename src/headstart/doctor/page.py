"""doctor.html: one self-contained page, each finding shown with its thumbnails."""

from __future__ import annotations

from collections import Counter, defaultdict
from html import escape

from headstart.data.images import thumbnail_base64
from headstart.doctor.examine import Diagnosis
from headstart.doctor.findings import ISSUES, Finding

THUMBNAIL = 128
_CASES = {
    "conflict": "conflicting labels",
    "leak": "across splits",
    "duplicate": "one class and split",
}
SHOWN = 60  # per section; issues.csv has them all
MEMBERS_SHOWN = 8  # per near-duplicate group; an exact group is one picture

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem;
       color: #222; }
h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; }
td, th { padding: .25rem .6rem; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f6f8fa; } td.n { text-align: right; }
.row { display: flex; flex-wrap: wrap; gap: .8rem; margin: .4rem 0 1.2rem; }
figure { margin: 0; width: 140px; font-size: .8rem; overflow-wrap: anywhere; }
figure img { width: 128px; height: 128px; object-fit: cover; border-radius: 4px; }
"""


def doctor_page(diagnosis: Diagnosis) -> str:
    by_issue: dict[str, list[Finding]] = defaultdict(list)
    for finding in diagnosis.findings:
        by_issue[finding.issue].append(finding)
    parts = [
        f"<h1>Dataset doctor: {escape(diagnosis.dataset)}</h1>",
        _overview(diagnosis),
        _summary(diagnosis.counts()),
        _duplicate_groups(diagnosis.groups),
    ]
    for issue in ISSUES:
        if issue.split("-")[0] in ("exact", "near") or not by_issue.get(issue):
            continue
        parts.append(_section(issue, by_issue[issue]))
    body = "\n".join(parts)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>headstart doctor</title><style>{_STYLE}</style></head><body>{body}"
        "</body></html>\n"
    )


def _overview(diagnosis: Diagnosis) -> str:
    classes = ", ".join(f"{escape(k)} {v:,}" for k, v in diagnosis.per_class.items())
    accuracy = diagnosis.cross_validated_accuracy
    count = len(diagnosis.per_class)
    kind = "labels, several a photo" if diagnosis.multi_label else "classes"
    text = f"<p>{diagnosis.images:,} readable images in {count} {kind} ({classes})."
    if accuracy is not None:
        score = (
            f"gets {accuracy:.1%} of its label decisions right"
            if diagnosis.multi_label
            else f"reaches {accuracy:.1%}"
        )
        text += f" A linear head {score} out of sample (5-fold cross-validation)."
    return text + " Every finding, with all its details, is in <code>issues.csv</code>.</p>"


def _summary(counts: dict[str, int]) -> str:
    if not counts:
        return "<p><b>No issues found.</b></p>"
    rows = "".join(
        f"<tr><td>{issue}</td><td>{escape(ISSUES[issue])}</td><td class='n'>{n:,}</td></tr>"
        for issue, n in counts.items()
    )
    return f"<table><tr><th>issue</th><th>meaning</th><th>images</th></tr>{rows}</table>"


def _duplicate_groups(groups: list[dict]) -> str:
    if not groups:
        return ""
    parts = ["<h2>Duplicate groups</h2>"]
    for group in groups[:SHOWN]:
        case = _CASES[group["issue"].split("-")[1]]
        parts.append(
            f"<h3>Group {group['group']}: {group['kind']}, {case}, "
            f"similarity {group['similarity']:.3f}</h3>"
        )
        parts.append(_group_members(group))
    return "".join(parts) + _more(len(groups), "groups")


def _group_members(group: dict) -> str:
    """Identical files as one thumbnail with where their copies are; near-identical photos
    one thumbnail each, the first MEMBERS_SHOWN of them: a page of 4,000 copies stays small."""
    members = group["members"]
    if group["kind"] == "exact":
        places = Counter(f"{m['label']} · {m['split']}" for m in members).most_common()
        where = ", ".join(f"{place} {n:,}" for place, n in places[:MEMBERS_SHOWN])
        where += ", …" if len(places) > MEMBERS_SHOWN else ""
        return _row([(members[0]["path"], f"{len(members):,} copies: {where}")])
    shown = members[:MEMBERS_SHOWN]
    row = _row((m["path"], f"{m['label']} · {m['split']}") for m in shown)
    hidden = len(members) - len(shown)
    return row + (
        f"<p>… and {hidden:,} more photos of this group in issues.csv.</p>" * (hidden > 0)
    )


def _section(issue: str, findings: list[Finding]) -> str:
    figures = ((f.path, f.details) for f in findings[:SHOWN] if f.path)
    plain = [f for f in findings if not f.path]
    text = "".join(f"<p>{escape(f.details)}</p>" for f in plain)
    return f"<h2>{issue}: {escape(ISSUES[issue])}</h2>{text}{_row(figures)}" + _more(
        len(findings), "images"
    )


def _row(figures) -> str:
    cells = "".join(
        f"<figure title='{escape(path)}'>"
        f"<img alt='' src='data:image/jpeg;base64,{thumbnail_base64(path, THUMBNAIL)}'>"
        f"<figcaption>{escape(caption)}</figcaption></figure>"
        for path, caption in figures
    )
    return f"<div class='row'>{cells}</div>" if cells else ""


def _more(total: int, what: str) -> str:
    return f"<p>… and {total - SHOWN:,} more {what} in issues.csv.</p>" if total > SHOWN else ""
