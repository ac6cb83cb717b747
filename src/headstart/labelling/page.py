"""`headstart label`: a local page to label the suggested photos with one key press each.

The same security as `serve`: loopback by default, an optional bearer token (the page reads it
from its address's #token=... fragment, which browsers never send), cross-origin requests and
foreign Host headers refused, nothing loaded from another host. Photos are served by their
position in the pool only: no path ever comes from a request.
"""

from __future__ import annotations

import io
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from headstart import __version__
from headstart.data.images import decode_rgb
from headstart.data.locations import read_file
from headstart.errors import HeadstartError
from headstart.labelling.session import Session
from headstart.serving.app import bearer_check, refuse_other_origins

PAGE = Path(__file__).with_name("page.html")
PHOTO_SIDE = 320


class Labelled(BaseModel):
    photo: int = Field(ge=0, le=10_000_000)
    label: str = Field(min_length=1, max_length=255)


class Skipped(BaseModel):
    photo: int = Field(ge=0, le=10_000_000)


def create_label_app(
    session: Session, token: str | None = None, hosts: frozenset[str] | None = None
) -> FastAPI:
    """The page and its API for `session`."""
    if token is not None and not token.strip():
        raise ValueError("an empty token would let every request in; give a real one or None")
    app = FastAPI(
        title="headstart label",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    authorised = Depends(bearer_check(token))

    refuse_other_origins(app, hosts)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/state", dependencies=[authorised])
    def state() -> dict:
        return _state(session)

    @app.get("/photo/{position}", dependencies=[authorised])
    def photo(position: int) -> Response:
        return Response(_thumbnail(session, position), media_type="image/jpeg")

    @app.post("/label", dependencies=[authorised])
    def label(given: Labelled) -> dict:
        _act(lambda: session.label(given.photo, given.label))
        return _state(session)

    @app.post("/skip", dependencies=[authorised])
    def skip(given: Skipped) -> dict:
        _act(lambda: session.skip(given.photo))
        return _state(session)

    @app.post("/undo", dependencies=[authorised])
    def undo() -> dict:
        session.undo()
        return _state(session)

    return app


def _act(action) -> None:
    try:
        action()
    except HeadstartError as error:
        raise HTTPException(409, str(error)) from None


def _state(session: Session) -> dict:
    progress = session.progress()
    return {
        "classes": session.classes,
        "dataset": str(session.dataset),
        "cards": [
            {
                "photo": card.photo,
                "name": str(session.photo(card.photo)).rsplit("/", 1)[-1],
                "suggested": card.suggested,
                "reason": card.reason,
            }
            for card in session.cards()
        ],
        "labelled": progress.labelled,
        "accuracy": progress.accuracy,
        "refits": progress.refits,
        "left": progress.left,
        "left_out": session.left_out.__dict__,
    }


def _thumbnail(session: Session, position: int) -> bytes:
    try:
        path = session.photo(position)
    except HeadstartError as error:
        raise HTTPException(404, str(error)) from None
    data = read_file(path)
    if isinstance(data, str):
        raise HTTPException(404, f"photo {position}: {data}")
    try:
        image = decode_rgb(data, draft=lambda w, h: (PHOTO_SIDE, PHOTO_SIDE))
    except ValueError as error:
        raise HTTPException(415, f"photo {position}: {error}") from None
    image.thumbnail((PHOTO_SIDE, PHOTO_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()
