"""The HTTP API with FastAPI's TestClient: every endpoint and every kind of bad input."""

import base64
import io
import socket

import hostile
import numpy as np
import pytest
from conftest import jpeg_bytes, real_photos
from fastapi.testclient import TestClient
from PIL import Image

from headstart.export.runtime import OnnxClassifier
from headstart.serving.app import Limits, allowed_hosts, create_app, is_loopback

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def model(exported_with_heat_maps) -> OnnxClassifier:
    return OnnxClassifier(exported_with_heat_maps[1])


@pytest.fixture(scope="module")
def client(model) -> TestClient:
    limits = Limits(max_upload_bytes=2_000_000, max_images=3, max_pixels=4_000_000)
    return TestClient(create_app(model, limits=limits))


@pytest.fixture(scope="module")
def photos() -> list[tuple[str, bytes]]:
    files = real_photos("daisy", 1, skip=17) + real_photos("sunflower", 1, skip=17)
    return [(p.name, p.read_bytes()) for p in files]


def test_health_metadata_and_schema(client):
    assert client.get("/health").json() == {"status": "ok"}
    metadata = client.get("/metadata").json()
    assert metadata["labels"] == ["daisy", "sunflower"] and metadata["input_size"] == [224, 224]
    assert metadata["backbone"]["name"] == "efficientnet_lite0"
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    # Swagger and ReDoc load their scripts from a CDN: not served
    assert client.get("/docs").status_code == client.get("/redoc").status_code == 404


def test_predict_multipart_images(client, model, photos):
    files = [("files", (name, data, "image/jpeg")) for name, data in photos]
    response = client.post("/predict?top_k=2", files=files)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["filename"] for p in predictions] == [name for name, _ in photos]
    expected = model.predict_pixels([model.preprocessing.pixels(data) for _, data in photos], 2)
    for prediction, top in zip(predictions, expected, strict=True):
        assert [t["label"] for t in prediction["top"]] == [label for label, _ in top]
        assert [t["probability"] for t in prediction["top"]] == pytest.approx([p for _, p in top])


def test_explain_adds_each_photo_with_its_heat_map(client, model, photos, tmp_path):
    from headstart.evaluation.overlays import overlay, photo_of

    assert client.get("/metadata").json()["explains"] is True
    files = [("files", (name, data, "image/jpeg")) for name, data in photos]
    response = client.post("/predict?top_k=1&explain=true", files=files)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    for prediction, (name, data) in zip(predictions, photos, strict=True):
        served = Image.open(io.BytesIO(base64.b64decode(prediction["heatmap_png"])))
        assert served.format == "PNG"
        (tmp_path / name).write_bytes(data)
        local = model.explain([tmp_path / name])[0]  # the same map, drawn here
        assert local.label == prediction["top"][0]["label"]
        drawn = overlay(photo_of(local), local)
        assert served.size == drawn.size
        served_pixels = np.asarray(served.convert("RGB"), np.float32)
        difference = np.abs(served_pixels - np.asarray(drawn, np.float32)).mean()
        plain = np.abs(served_pixels - np.asarray(overlay_free(drawn, data), np.float32)).mean()
        assert difference < 2 < plain  # the map is there, and it is this photo's
    plain = client.post("/predict?top_k=1", files=files).json()["predictions"]
    assert all(p["heatmap_png"] is None for p in plain)


def overlay_free(drawn, data):
    """The photo alone, where an overlay of the same size shows it."""
    photo = Image.open(io.BytesIO(data)).convert("RGB")
    canvas = Image.new("RGB", drawn.size, "white")
    width = drawn.width
    canvas.paste(photo.resize((width, round(photo.height * width / photo.width))), (0, 0))
    return canvas


def test_explain_on_a_model_exported_without_heat_maps_says_so(exported, photos):
    client = TestClient(create_app(OnnxClassifier(exported[1])))
    assert client.get("/metadata").json()["explains"] is False
    name, data = photos[0]
    response = client.post("/predict?explain=true", files=[("files", (name, data, "image/jpeg"))])
    assert response.status_code == 400 and "without heat maps" in response.json()["detail"]


def test_predict_raw_bytes_matches_the_runtime(client, model, photos):
    _, data = photos[1]
    response = client.post("/predict?top_k=1", content=data, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text
    expected = model.predict_pixels([model.preprocessing.pixels(data)], top_k=1)[0][0]
    top = response.json()["predictions"][0]["top"][0]
    assert (top["label"], top["probability"]) == (expected[0], pytest.approx(expected[1]))


def bad_request(client, **kwargs) -> tuple[int, str]:
    response = client.post("/predict", **kwargs)
    return response.status_code, response.json()["detail"]


def test_bad_inputs_get_clear_4xx_answers(client, photos):
    _, photo = photos[0]
    status, detail = bad_request(client, content=b"")
    assert status == 400 and "empty request" in detail
    status, detail = bad_request(
        client, files=[("files", ("notes.jpg", b"just text", "image/jpeg"))]
    )
    assert status == 415 and detail.startswith("notes.jpg: not a readable image")
    truncated = ("cut.jpg", photo[: len(photo) // 3], "image/jpeg")
    status, detail = bad_request(client, files=[("files", truncated)])
    assert status == 415 and detail.startswith("cut.jpg")
    status, detail = bad_request(client, content=b"\xff" * 2_100_000)
    assert status == 413 and "larger than" in detail
    many = [("files", (f"{i}.jpg", photo, "image/jpeg")) for i in range(4)]
    status, detail = bad_request(client, files=many)
    assert status == 413 and "at most 3 images" in detail
    status, detail = bad_request(client, files=[("files", ("empty.jpg", b"", "image/jpeg"))])
    assert status == 400 and "empty.jpg: empty file" in detail
    assert client.post("/predict?top_k=0", content=photo).status_code == 422


def test_decompression_bombs_are_refused(client):
    bomb = io.BytesIO()
    Image.new("L", (4000, 4000)).save(bomb, "PNG")  # 16 MP of zeros compresses to a few KB
    status, detail = bad_request(
        client, files=[("files", ("bomb.png", bomb.getvalue(), "image/png"))]
    )
    assert status == 415 and "over the limit" in detail
    small = jpeg_bytes(Image.new("RGB", (300, 200), (120, 80, 40)))
    assert client.post("/predict", content=small).status_code == 200


def test_bearer_token(model, photos):
    client = TestClient(create_app(model, token=TOKEN))
    _, photo = photos[0]
    assert client.get("/health").status_code == 200  # health stays open for load balancers
    assert client.post("/predict", content=photo).status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert client.post("/predict", content=photo, headers=wrong).status_code == 401
    assert client.get("/metadata", headers=wrong).status_code == 401
    right = {"authorization": f"Bearer {TOKEN}"}
    assert client.post("/predict", content=photo, headers=right).status_code == 200


def test_web_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Drop photos here" in page.text


def test_schema_is_behind_the_token_and_empty_tokens_are_refused(model):
    client = TestClient(create_app(model, token=TOKEN))
    assert client.get("/openapi.json").status_code == 401
    right = {"authorization": f"Bearer {TOKEN}"}
    assert client.get("/openapi.json", headers=right).status_code == 200
    for empty in ("", "  "):
        with pytest.raises(ValueError, match="empty token"):
            create_app(model, token=empty)
    assert (
        client.post("/predict", content=b"x", headers={"authorization": "Bearer "}).status_code
        == 401
    )


def test_cross_origin_and_rebound_host_requests_are_refused(model, photos):
    _, photo = photos[0]
    client = TestClient(create_app(model, hosts=allowed_hosts("127.0.0.1", 8000)))
    local = {"host": "127.0.0.1:8000"}
    assert client.post("/predict", content=photo, headers=local).status_code == 200
    same_origin = {**local, "origin": "http://127.0.0.1:8000"}
    assert client.post("/predict", content=photo, headers=same_origin).status_code == 200
    evil = {**local, "origin": "https://evil.example"}
    response = client.post("/predict", content=photo, headers=evil)
    assert response.status_code == 403 and "cross-origin" in response.json()["detail"]
    rebound = {"host": "evil.example:8000"}
    assert client.post("/predict", content=photo, headers=rebound).status_code == 403


def test_too_many_files_is_413_and_bad_lengths_are_4xx(client, photos):
    _, photo = photos[0]
    many = [("files", (f"{i}.jpg", photo[:100], "image/jpeg")) for i in range(18)]
    status, detail = bad_request(client, files=many)
    assert status == 413 and "at most 3 images" in detail
    headers = [(b"content-length", "²".encode("latin-1")), (b"content-type", b"image/jpeg")]
    assert raw_status(client.app, headers, photo) == 413


def raw_status(app, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    """POST /predict with exactly these headers (HTTP clients fix Content-Length themselves)."""
    import asyncio

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    try:
        asyncio.run(app(scope, receive, send))
    except Exception:  # the app crashed: what a client sees is a 500
        return 500
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("strip.png", hostile.strip(1_000_000, 1)),
        ("tall.png", hostile.strip(1, 20_000)),
        ("crafted.tif", hostile.rational_strip_offsets_tiff()),
        *sorted(hostile.other_formats().items()),
    ],
)
def test_hostile_uploads_are_refused_never_a_500(client, name, data):
    response = client.post("/predict", files=[("files", (name, data, "image/png"))])
    assert response.status_code == 415, response.text
    assert response.json()["detail"].startswith(name)


def test_every_loopback_address_keeps_the_host_check():
    """Before: --host 127.0.0.2 (loopback) was taken for a public address: no Host check."""
    for host in ("127.0.0.2", "127.1.2.3", "::1", "localhost"):
        assert is_loopback(host) and allowed_hosts(host, 8000) is not None, host
    assert "127.0.0.2:8000" in allowed_hosts("127.0.0.2", 8000)
    assert "[::1]:8000" in allowed_hosts("::1", 8000)
    for host in ("0.0.0.0", "10.1.2.3", "example.org"):
        assert not is_loopback(host) and allowed_hosts(host, 8000) is None, host


def test_a_busy_port_or_an_unknown_host_is_one_line(exported, capsys):
    """Before: uvicorn's exit 3 and several lines of its log."""
    from conftest import usage_check

    _, onnx_file = exported
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        result = usage_check("serve", str(onnx_file), "--port", port, capsys=capsys)
    assert result.returncode == 1 and "cannot listen there" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = usage_check("serve", str(onnx_file), "--host", "no-such-host.invalid", capsys=capsys)
    assert result.returncode == 1 and "cannot be resolved" in result.stderr


@pytest.fixture
def live_server(model):
    """A real server on a loopback port (slow clients need real sockets): its URL's host:port."""
    import threading
    import time

    import uvicorn

    limits = Limits(upload_seconds=10.0)
    app = create_app(model, limits=limits)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield server.servers[0].sockets[0].getsockname()[:2]
    server.should_exit = True
    thread.join(timeout=10)


def trickle(address, seconds: float) -> socket.socket:
    """A client that announces a 100 kB upload, then sends one byte every `seconds`."""
    import threading

    connection = socket.create_connection(address)
    connection.sendall(
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )

    def drip() -> None:
        try:
            while True:
                connection.sendall(b"x")
                threading.Event().wait(seconds)
        except OSError:  # the server closed it
            pass

    threading.Thread(target=drip, daemon=True).start()
    return connection


@pytest.mark.slow  # the slow clients are cut off after 10 s
def test_slow_clients_never_hold_back_the_others(live_server, photos):
    """Before: a client sending its body slowly held a decoding permit with no deadline, so
    two of them (one per core) left every other request unanswered."""
    import http.client
    import time

    _, data = photos[0]
    client = http.client.HTTPConnection(*live_server, timeout=10)
    client.request("POST", "/predict", data, {"Content-Type": "image/jpeg"})
    assert client.getresponse().read()  # warm: the first run's set-up is not what is timed
    slow = [trickle(live_server, 0.5) for _ in range(4)]
    time.sleep(0.5)  # they are all inside the server, sending
    started = time.monotonic()
    client.request("POST", "/predict", data, {"Content-Type": "image/jpeg"})
    answer = client.getresponse()
    # before the slow clients' deadline (9.5 s from here): they never held a decoding slot
    assert answer.status == 200 and time.monotonic() - started < 7
    for connection in slow:  # each is cut off at the deadline with a 408
        connection.settimeout(20)
        reply = b""
        while b"}" not in reply and (part := connection.recv(4096)):
            reply += part
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b"not received within 10 s" in reply
        connection.close()


def test_a_request_is_bounded_in_pixels_and_memory_failures_are_503(model, photos, monkeypatch):
    """Before: allocation failures under a memory cap were 500s (and stayed so afterwards),
    and 16 images of 40 MP each were decoded for one request."""
    name, data = photos[0]
    width, height = Image.open(io.BytesIO(data)).size
    limits = Limits(max_request_pixels=2 * width * height)
    client = TestClient(create_app(model, limits=limits))
    two, three = [("f", (name, data, "image/jpeg"))] * 2, [("f", (name, data, "image/jpeg"))] * 3
    assert client.post("/predict", files=two).status_code == 200
    refused = client.post("/predict", files=three)
    assert refused.status_code == 413 and "megapixels together" in refused.json()["detail"]

    from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

    real = model.rank_pixels
    failures = [RuntimeException("Failed to allocate memory for requested buffer"), MemoryError()]

    def short_of_memory(*args, **kwargs):
        if failures:
            raise failures.pop(0)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "rank_pixels", short_of_memory)
    for _ in range(2):
        answer = client.post("/predict", files=two)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        assert "short of memory" in answer.json()["detail"]
    assert client.post("/predict", files=two).status_code == 200  # and it recovers


def test_too_many_uploads_at_once_are_503(model, photos):
    import asyncio

    from headstart.serving.app import receive_uploads

    limits = Limits(max_receiving=1)
    receiving = asyncio.Semaphore(1)

    async def while_one_is_receiving() -> int:
        await receiving.acquire()
        try:
            await receive_uploads(None, limits, receiving)
        except Exception as error:
            return error.status_code
        return 200

    assert asyncio.run(while_one_is_receiving()) == 503
