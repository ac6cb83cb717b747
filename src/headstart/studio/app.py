"""`headstart studio`: the page at / and the JSON API under /api/ that it uses (and that other
tools may drive): classes, photos, the model's state, predictions and exports.

The security of `serve`: loopback by default, a bearer token on every /api/ request when one is
set (the page reads it from its address's #token=... fragment, which browsers never send),
requests from another origin and foreign Host headers refused, upload sizes bounded before a
body is read, images checked by decoding them. A class or photo is named only by what the
project lists: no path ever comes from a request.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, Field

from headstart import __version__
from headstart.data.images import decode_rgb
from headstart.errors import HeadstartError
from headstart.labelling.page import create_label_app
from headstart.labelling.session import Session
from headstart.serving.app import Limits, bearer_check, receive_uploads, refuse_other_origins
from headstart.storage import SafeCsvWriter, atomic_file
from headstart.studio.finetuning import FineTuner
from headstart.studio.project import Project
from headstart.studio.trainer import Trainer
from headstart.training.settings import FitSettings

PAGE = Path(__file__).with_name("studio.html")
THUMBNAIL_SIDE = 160


class NewClass(BaseModel):
    name: str = Field(min_length=1, max_length=255)


class Move(BaseModel):
    to: str = Field(min_length=1, max_length=255)


class FineTune(BaseModel):
    epochs: int = Field(default=FitSettings().finetune_epochs, ge=1, le=50)


def create_studio_app(
    trainer: Trainer,
    token: str | None = None,
    hosts: frozenset[str] | None = None,
    limits: Limits | None = None,
    labelling: Session | None = None,
) -> FastAPI:
    """The studio for `trainer.project`; with `labelling` (a session labelling a pool of
    photos into the project's photos/), the labelling page at /label/ as one of its views."""
    if token is not None and not token.strip():
        raise ValueError("an empty token would let every request in; give a real one or None")
    project, limits = trainer.project, limits or Limits()
    app = FastAPI(title="headstart studio", version=__version__, docs_url=None, redoc_url=None)
    refuse_other_origins(app, hosts)
    authorised = [Depends(bearer_check(token))]
    receiving = asyncio.Semaphore(limits.max_receiving)
    workers = ThreadPoolExecutor(2, thread_name_prefix="headstart-studio")

    async def run(function, *args):
        try:
            return await asyncio.get_running_loop().run_in_executor(workers, function, *args)
        except LookupError as error:
            raise HTTPException(404, str(error.args[0])) from None
        except HeadstartError as error:
            raise HTTPException(409, str(error)) from None

    def changed():
        trainer.changed()
        return _project(project, trainer, labelling)

    if labelling is not None:
        app.mount("/label", create_label_app(labelling, token, hosts))

        @app.middleware("http")
        async def labelled(request: Request, call_next):
            response = await call_next(request)
            is_label = request.url.path.startswith("/label/") and request.method == "POST"
            if is_label and response.status_code < 400:  # a label copies a photo into photos/
                trainer.changed()
            return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/project", dependencies=authorised)
    def read_project() -> dict:
        return _project(project, trainer, labelling)

    @app.post("/api/classes", dependencies=authorised, status_code=201)
    async def create_class(given: NewClass) -> dict:
        await run(project.create_class, given.name)
        return changed()

    @app.patch("/api/classes/{name}", dependencies=authorised)
    async def rename_class(name: str, given: NewClass) -> dict:
        await run(project.rename_class, name, given.name)
        return changed()

    @app.delete("/api/classes/{name}", dependencies=authorised)
    async def delete_class(name: str) -> dict:
        await run(project.delete_class, name)
        return changed()

    @app.get("/api/classes/{name}/photos", dependencies=authorised)
    async def photos(name: str) -> dict:
        return {"photos": await run(project.photo_names, name)}

    @app.post("/api/classes/{name}/photos", dependencies=authorised)
    async def add_photos(name: str, request: Request) -> dict:
        """Images as multipart files or one raw body: each kept as a file of the class; one
        that is not a readable image is reported and left out, the others kept."""
        await run(project.class_folder, name)
        uploads = await receive_uploads(request, limits, receiving)
        added, refused = [], []
        for filename, data in uploads:
            try:
                result = await run(project.add_photo, name, data, limits.max_pixels)
                added.append({"name": result.name, "new": result.new})
            except ValueError as error:
                refused.append({"filename": filename, "reason": str(error)})
        if not added:
            raise HTTPException(415, "; ".join(f"{r['filename']}: {r['reason']}" for r in refused))
        fresh = any(photo["new"] for photo in added)  # the same bytes again change nothing
        state = changed() if fresh else _project(project, trainer, labelling)
        return {"added": added, "refused": refused, **state}

    @app.get("/api/classes/{name}/photos/{photo}", dependencies=authorised)
    async def thumbnail(name: str, photo: str) -> Response:
        path = await run(project.photo_path, name, photo)
        return Response(await run(_thumbnail, path), media_type="image/jpeg")

    @app.delete("/api/classes/{name}/photos/{photo}", dependencies=authorised)
    async def remove_photo(name: str, photo: str) -> dict:
        await run(project.remove_photo, name, photo)
        return changed()

    @app.post("/api/classes/{name}/photos/{photo}/move", dependencies=authorised)
    async def move_photo(name: str, photo: str, given: Move) -> dict:
        await run(project.move_photo, name, photo, given.to)
        return changed()

    @app.get("/api/doctor", dependencies=authorised)
    async def doctor() -> dict:
        """The dataset doctor on the project's photos: each finding names its photo by class
        and name, so that the page's fix (remove it, or move it to the suggested class) is one
        request."""
        return {"findings": await run(findings, trainer)}

    finetuner = FineTuner(trainer)

    @app.get("/api/finetune", dependencies=authorised)
    def finetune_state() -> dict:
        return asdict(finetuner.state())

    @app.post("/api/finetune", dependencies=authorised, status_code=202)
    async def finetune(given: FineTune) -> dict:
        """Start fine-tuning into PROJECT/model-finetuned/ (minutes): GET says how it goes."""
        return asdict(await run(finetuner.start, given.epochs))

    @app.get("/api/model", dependencies=authorised)
    async def model(wait: float = Query(0, ge=0, le=120)) -> dict:
        """The model's state; with `wait`, once it is trained on the project as it is (or
        after that many seconds)."""
        if wait:
            await asyncio.get_running_loop().run_in_executor(None, trainer.wait, wait)
        return asdict(trainer.state())

    @app.post("/api/predict", dependencies=authorised)
    async def predict(request: Request, explain: bool = False) -> dict:
        uploads = await receive_uploads(request, limits, receiving)
        if len(uploads) != 1:
            raise HTTPException(413, "one photo a request")
        try:
            answer = await run(trainer.predict, uploads[0][1], explain, limits.max_pixels)
        except ValueError as error:
            raise HTTPException(415, f"not a readable image: {error}") from None
        return {
            "top": [{"label": label, "probability": p} for label, p in answer.ranked],
            "unknown": answer.unknown,
            "unknown_score": answer.unknown_score,
            "heatmap_png": answer.heatmap_png,
        }

    @app.get("/api/export/model.onnx", dependencies=authorised)
    async def export_onnx() -> FileResponse:
        """The newest model as ONNX, written to PROJECT/model/model.onnx."""
        path = await run(_export_onnx, trainer)
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)

    @app.get("/api/export/report.zip", dependencies=authorised)
    async def export_report() -> FileResponse:
        """The newest model's report on the project's held-out photos, written to
        PROJECT/report/ and zipped to PROJECT/exports/report.zip."""
        path = await run(report_zip, trainer)
        return FileResponse(path, media_type="application/zip", filename=path.name)

    @app.get("/api/export/finetuned.onnx", dependencies=authorised)
    async def export_finetuned() -> FileResponse:
        """The fine-tuned model as ONNX, written to PROJECT/model-finetuned/model.onnx."""
        path = await run(_export_finetuned, finetuner)
        return FileResponse(path, media_type="application/octet-stream", filename="finetuned.onnx")

    @app.get("/api/export/photos.zip", dependencies=authorised)
    async def export_photos() -> FileResponse:
        """Every photo and a labels.csv, written to PROJECT/exports/photos.zip."""
        path = await run(photos_zip, project)
        return FileResponse(path, media_type="application/zip", filename=path.name)

    return app


def _project(project: Project, trainer: Trainer, labelling: Session | None) -> dict:
    return {
        "project": str(project.root),
        "classes": [{"name": name, "count": count} for name, count in project.counts().items()],
        "model": asdict(trainer.state()),
        "labelling": None if labelling is None else {"left": labelling.progress().left},
    }


def findings(trainer: Trainer) -> list[dict]:
    from headstart.doctor.findings import ISSUES
    from headstart.doctor.run import diagnose

    project = trainer.project
    if len(project.classes()) < 2:
        raise HeadstartError("the doctor needs at least 2 classes")
    diagnosis = diagnose(project.photos, context=trainer.context)
    inside = f"{project.photos.resolve()}/"  # the project's paths, shown from photos/ on
    found = []
    for finding in diagnosis.findings:
        located = project.locate(finding.path) if finding.path else None
        found.append(
            {
                "issue": finding.issue,
                "meaning": ISSUES[finding.issue],
                "label": located[0] if located else None,
                "photo": located[1] if located else None,
                "details": finding.details.replace(inside, "").replace(f"{project.photos}/", ""),
                "suggested": finding.suggested or None,
                "group": finding.group,
            }
        )
    return found


def _thumbnail(path: Path) -> bytes:
    side = THUMBNAIL_SIDE
    image = decode_rgb(path.read_bytes(), draft=lambda w, h: (side, side))
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _export_onnx(trainer: Trainer) -> Path:
    from headstart.export.onnx import EXPORT_NAME, export_classifier

    _trained_fully(trainer)
    classifier = trainer.classifier()
    return export_classifier(classifier, trainer.project.model / EXPORT_NAME)


def _trained_fully(trainer: Trainer) -> None:
    """Until the full training is done, so that an export is of the model the model folder
    holds, never of a refitted head that the training is about to replace."""
    if not trainer.wait_idle(120):
        raise HeadstartError("the model is still training; export again in a moment")


def _export_finetuned(finetuner: FineTuner) -> Path:
    from headstart.export.onnx import EXPORT_NAME, export_classifier
    from headstart.model.classifier import Classifier

    if not finetuner.state().ready:
        raise HeadstartError("no fine-tuned model yet: fine-tune first")
    classifier = Classifier.load(finetuner.folder, finetuner.trainer.context)
    return export_classifier(classifier, finetuner.folder / EXPORT_NAME)


def report_zip(trainer: Trainer) -> Path:
    from headstart.evaluation.report import write_report
    from headstart.model.classifier import Classifier

    _trained_fully(trainer)
    trainer.classifier()  # says why when there is no model yet
    project = trainer.project
    # loaded here: the trained one's feature cache belongs to the training thread (SQLite)
    classifier = Classifier.load(project.model, trainer.context)
    folder = write_report(classifier, project.photos, project.root / "report").parent
    target = project.root / "exports" / "report.zip"
    with atomic_file(target) as file, zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"report/{path.relative_to(folder)}")
    return target


def photos_zip(project: Project) -> Path:
    """PROJECT/exports/photos.zip: every photo as LABEL/NAME, and labels.csv (path,label),
    which `headstart train` reads; written beside, then renamed into place."""
    target = project.root / "exports" / "photos.zip"
    rows = io.StringIO()
    writer = SafeCsvWriter(rows)
    writer.writerow(["path", "label"])
    with atomic_file(target) as file, zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
        for path, label in project.labelled_photos():
            name = f"{label}/{path.name}"
            archive.write(path, name)
            writer.writerow([name, label])
        archive.writestr("labels.csv", rows.getvalue())
    return target
