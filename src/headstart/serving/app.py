"""The HTTP API: POST /predict, GET /health, GET /metadata, and a web page at /.

Every bad request gets a 4xx with a clear message: bodies are size-checked before they are read,
images are checked by decoding them (never by file name), and decompression bombs are refused.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from headstart import __version__
from headstart.data.images import DecodingMemoryError, declared_pixels
from headstart.errors import HeadstartError
from headstart.export.runtime import OnnxClassifier
from headstart.settings import check_settings, number, setting
from headstart.threads import cpu_threads

PAGE = Path(__file__).with_name("page.html")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; each bound is checked when the server starts."""

    max_upload_bytes: int = setting(20 * 1024 * 1024, number(1, 2**31), "Largest request body")
    max_images: int = setting(16, number(1, 1000), "Most images per request")
    # Larger images are refused as possible decompression bombs.
    max_pixels: int = setting(40_000_000, number(1, 89_000_000), "Most pixels per image")
    max_request_pixels: int = setting(
        200_000_000, number(1, 10**10), "Most pixels decoded for one request (all its images)"
    )
    max_top_k: int = setting(20, number(1, 1000), "Most labels per image")
    # A client that sends slowly holds a connection, never a decoding slot, and only this long.
    upload_seconds: float = setting(
        30.0, number(0.1, 3600, kind=float), "Longest time a client may take to send a request"
    )
    max_receiving: int = setting(64, number(1, 10_000), "Most requests receiving bodies at once")

    def __post_init__(self) -> None:
        check_settings(self)


class Label(BaseModel):
    label: str
    probability: float


class ImagePrediction(BaseModel):
    filename: str
    top: list[Label]
    # A multi-label model's answer: every label past its threshold, most probable first
    labels: list[str] | None = None
    unknown: bool | None = None  # unlike every class (None: the model has no such score)
    unknown_score: float | None = None
    # With ?explain=true: the photo with the top label's heat map over it, a PNG in base64.
    heatmap_png: str | None = None


class Predictions(BaseModel):
    predictions: list[ImagePrediction]


class Metadata(BaseModel):
    labels: list[str]
    backbone: dict
    input_size: list[int]
    version: str
    explains: bool  # whether ?explain=true gives heat maps (the model was exported with them)
    multi_label: bool = False  # a set of labels a photo, each past its threshold
    thresholds: list[float] | None = None


def is_loopback(host: str) -> bool:
    """localhost, any address of 127.0.0.0/8, or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name other than localhost: not known to stay on this machine
        return False


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """Host headers a server bound to `host` answers: for loopback, only loopback names (a web
    page that rebinds its own name to 127.0.0.1 is refused); None (any) otherwise."""
    if not is_loopback(host):
        return None
    own = f"[{host}]" if ":" in host else host
    names = ("127.0.0.1", "localhost", "[::1]", own)
    return frozenset(n for name in names for n in (name, f"{name}:{port}"))


def check_listenable(host: str, port: int) -> None:
    """Fail in one line, before any work, when the server could not listen at host:port (a
    name that does not resolve, a port in use) instead of uvicorn's exit 3 and its log."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise HeadstartError(f"--host {host}: cannot be resolved ({error})") from error
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as error:
            raise HeadstartError(
                f"{host}:{port}: cannot listen there ({error.strerror or error})"
            ) from error


def create_app(
    model: OnnxClassifier,
    token: str | None = None,
    limits: Limits = Limits(),
    hosts: frozenset[str] | None = None,
) -> FastAPI:
    """The app for `model`. `token`: bearer token required on all but /health and the page;
    `hosts`: the Host headers accepted (None: any). Cross-origin requests are always refused."""
    if token is not None and not token.strip():
        raise ValueError("an empty token would let every request in; give a real one or None")
    app = FastAPI(
        title="headstart",
        version=__version__,
        description="Image classification",
        docs_url=None,  # Swagger and ReDoc pages load scripts from a CDN: not served
        redoc_url=None,
        openapi_url=None,
    )
    authorised = Depends(bearer_check(token))
    receiving = asyncio.Semaphore(limits.max_receiving)  # bounds the bodies held in memory
    # Decoding and inference run on this many threads, no more: each thread that decodes a
    # large photo keeps its own malloc arena, and the server's address space with it.
    workers = ThreadPoolExecutor(cpu_threads(), thread_name_prefix="headstart-predict")
    busy = asyncio.Semaphore(cpu_threads())  # bounds the uploads decoded at once

    refuse_other_origins(app, hosts)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[authorised])
    def openapi() -> dict:
        return app.openapi()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata", response_model=Metadata, dependencies=[authorised])
    def metadata() -> Metadata:
        return Metadata(
            labels=model.labels,
            backbone=model.backbone,
            input_size=list(model.preprocessing.input_size),
            version=__version__,
            explains="heatmap" in model.outputs,
            multi_label=model.multi_label,
            thresholds=list(model.thresholds) or None,
        )

    @app.post(
        "/predict",
        response_model=Predictions,
        dependencies=[authorised],
        openapi_extra={"requestBody": {"content": {"multipart/form-data": {}, "image/*": {}}}},
    )
    async def predict(
        request: Request,
        top_k: int = Query(5, ge=1, le=limits.max_top_k),
        explain: bool = Query(False, description="Add each image's heat map as a PNG"),
    ) -> Predictions:
        """Images as multipart files (any field name) or one image as the raw request body."""
        if explain and "heatmap" not in model.outputs:
            raise HTTPException(400, "this model was exported without heat maps (--explain)")
        uploads = await receive_uploads(request, limits, receiving)
        loop = asyncio.get_running_loop()
        ranks = len(model.labels) if model.multi_label else top_k  # the set needs every label
        shown: list[str | None] = [None] * len(uploads)
        async with busy:
            try:
                decoded = await loop.run_in_executor(workers, _decode_all, model, uploads, limits)
                if explain:  # one run gives the labels and the maps
                    ranked, scores, probabilities, maps = await loop.run_in_executor(
                        workers, model.rank_and_map_pixels, decoded, ranks
                    )
                    shown = await loop.run_in_executor(
                        workers, overlays, model, uploads, probabilities, maps, limits.max_pixels
                    )
                else:
                    ranked, scores = await loop.run_in_executor(
                        workers, model.rank_pixels, decoded, ranks
                    )
            except HTTPException:
                raise
            except Exception as error:
                if not _is_allocation_failure(error):
                    raise
                raise HTTPException(
                    503,
                    "the server is short of memory for this request: retry later, or send "
                    "fewer or smaller images",
                    {"Retry-After": "5"},
                ) from None
        numbers = [None] * len(ranked) if scores is None else [float(s) for s in scores]
        return Predictions(
            predictions=[
                ImagePrediction(
                    filename=filename,
                    top=[Label(label=k, probability=p) for k, p in top[:top_k]],
                    labels=model.label_set(top) if model.multi_label else None,
                    unknown=None if score is None else model.is_unknown(score),
                    unknown_score=score,
                    heatmap_png=overlay,
                )
                for (filename, _), top, score, overlay in zip(
                    uploads, ranked, numbers, shown, strict=True
                )
            ]
        )

    return app


def refuse_other_origins(app: FastAPI, hosts: frozenset[str] | None) -> None:
    """Answer 403 to a request from another origin, or naming a Host not in `hosts`."""

    @app.middleware("http")
    async def same_origin_only(request: Request, call_next):
        refusal = origin_refusal(request, hosts)
        if refusal:
            return JSONResponse({"detail": refusal}, status_code=403)
        return await call_next(request)


def origin_refusal(request: Request, hosts: frozenset[str] | None) -> str | None:
    host = request.headers.get("host", "").lower()
    if hosts is not None and host not in hosts:
        return f"unexpected Host header {host!r}"
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != host:
        return "cross-origin requests are refused"
    return None


def bearer_check(token: str | None):
    def check(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
            raise HTTPException(
                401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
            )

    return check


async def receive_uploads(
    request: Request, limits: Limits, receiving: asyncio.Semaphore
) -> list[tuple[str, bytes]]:
    """The request's uploads, read within limits.upload_seconds, or a 4xx/503 saying why."""
    if receiving.locked():  # the event loop runs one coroutine at a time: no race here
        raise HTTPException(503, "too many uploads in progress: retry later", {"Retry-After": "5"})
    async with receiving:
        try:
            return await asyncio.wait_for(_read_uploads(request, limits), limits.upload_seconds)
        except TimeoutError:
            raise HTTPException(
                408, f"the request was not received within {limits.upload_seconds:g} s"
            ) from None


def _is_allocation_failure(error: Exception) -> bool:
    """A MemoryError, or ONNX Runtime's own exception types naming a failed allocation."""
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return type(error).__module__.startswith("onnxruntime") and (
        "alloc" in text or "out of memory" in text
    )


async def _read_uploads(request: Request, limits: Limits) -> list[tuple[str, bytes]]:
    length = request.headers.get("content-length")
    if length is None:
        raise HTTPException(411, "a Content-Length header is required")
    if not (length.isascii() and length.isdigit()) or int(length) > limits.max_upload_bytes:
        raise HTTPException(413, f"upload larger than {limits.max_upload_bytes} bytes")
    body = await request.body()
    if not body:
        raise HTTPException(400, "empty request: send images as multipart files or a raw body")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return [("image", body)]
    try:
        form = await request.form(max_files=limits.max_images + 1, max_fields=limits.max_images + 1)
    except StarletteHTTPException as error:  # what Starlette's form parser raises
        if "Too many" in str(error.detail):
            raise HTTPException(413, f"at most {limits.max_images} images per request") from None
        raise
    uploads = [
        (value.filename or key, await value.read())
        for key, value in form.multi_items()
        if not isinstance(value, str)
    ]
    if not uploads:
        raise HTTPException(400, "the form holds no files")
    if len(uploads) > limits.max_images:
        raise HTTPException(413, f"at most {limits.max_images} images per request")
    return uploads


def _decode_all(model: OnnxClassifier, uploads: list[tuple[str, bytes]], limits: Limits) -> list:
    """Every upload's network input; a 4xx naming the first that has none, and a 413 before
    any decoding when the images claim more pixels together than one request may decode."""
    claimed = 0
    for name, data in uploads:
        if not data:
            raise HTTPException(400, f"{name}: empty file")
        claimed += declared_pixels(data)
    if claimed > limits.max_request_pixels:
        raise HTTPException(
            413,
            f"the images hold {claimed / 1e6:.0f} megapixels together; one request may hold "
            f"{limits.max_request_pixels / 1e6:.0f}: send fewer or smaller images",
        )
    decoded = []
    for name, data in uploads:
        try:
            decoded.append(model.network_input(data, limits.max_pixels))
        except DecodingMemoryError:
            raise MemoryError from None
        except ValueError as error:
            raise HTTPException(415, f"{name}: not a readable image: {error}") from None
    return decoded


def overlays(
    model,
    uploads: list[tuple[str, bytes]],
    probabilities: np.ndarray,
    maps: np.ndarray,
    max_pixels: int | None,
) -> list[str | None]:
    """Each photo, decoded small, with its top label's heat map over it: base64 PNGs. `model`
    is an OnnxClassifier or a Classifier (their labels and preprocessing)."""
    from headstart.data.images import decode_rgb
    from headstart.evaluation.overlays import SHOWN_SIDE, overlay_png
    from headstart.model.explanation import Explanation

    def shown(width: int, height: int) -> tuple[int, int]:
        scale = min(1.0, SHOWN_SIDE / max(width, height))
        return max(1, round(width * scale)), max(1, round(height * scale))

    encoded: list[str | None] = []
    for (name, data), row, own_maps in zip(uploads, probabilities, maps, strict=True):
        photo = decode_rgb(data, draft=shown, max_pixels=max_pixels)
        top = int(np.argmax(row))
        explanation = Explanation(
            Path(name),
            model.labels[top],
            float(row[top]),
            own_maps[top],
            model.preprocessing.crop_box(*photo.size),
            photo.size,
        )
        encoded.append(base64.b64encode(overlay_png(photo, explanation)).decode("ascii"))
    return encoded
