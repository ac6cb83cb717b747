"""Images named by URI (an S3 bucket on a local server, file://) are read as files are."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import headstart
from safetensors.numpy import load_file

from headstart.data.locations import ObjectURI, image_location, read_file
from headstart.data.sources import load_dataset


def test_an_object_uri_is_named_and_read_like_a_file(tmp_path, monkeypatch):
    photo = tmp_path / "a b.jpg"
    photo.write_bytes(b"\xff\xd8 not much of a jpeg")
    uri = image_location(photo.absolute().as_uri())
    assert isinstance(uri, ObjectURI) and uri.name == "a b.jpg" and uri.suffix == ".jpg"
    assert uri.key == photo.absolute().as_posix().lstrip("/")
    assert read_file(uri) == photo.read_bytes()
    assert image_location("photos/x.jpg", tmp_path) == tmp_path / "photos" / "x.jpg"
    with pytest.raises(TypeError):  # never taken for a local file by mistake
        Path(uri)
    assert read_file(ObjectURI(photo.absolute().as_uri() + "-gone")).startswith("unreadable:")
    assert read_file(ObjectURI("nosuch://bucket/x.jpg")).startswith("unreadable:")
    monkeypatch.setattr("headstart.data.locations.MAX_IMAGE_BYTES", 10)
    for too_large in (uri, photo, Path("/dev/zero")):  # named, never read whole
        assert read_file(too_large) == "unreadable: larger than 0 MiB"


def listings(store, tmp_path: Path) -> tuple[Path, Path]:
    """The same images listed twice: by their S3 URIs, and by local paths with the same keys."""
    keys = sorted(p.relative_to(store.folder).as_posix() for p in store.folder.rglob("*.jpg"))
    by_uri, by_path = tmp_path / "by_uri.csv", store.folder / "by_path.csv"
    by_uri.write_text("".join(f"{store.uri(k)},{k.split('/')[0]}\n" for k in keys))
    by_path.write_text("".join(f"{k},{k.split('/')[0]}\n" for k in keys))
    return by_uri, by_path


def test_a_dataset_listed_by_uri_splits_as_its_local_copy(object_store, tmp_path, monkeypatch):
    for name, value in object_store.env.items():
        monkeypatch.setenv(name, value)
    by_uri, by_path = listings(object_store, tmp_path)
    remote, local = load_dataset(by_uri), load_dataset(by_path)
    assert [(s.path.key, s.split) for s in remote.samples] == [
        (Path(s.path).relative_to(object_store.folder).as_posix(), s.split) for s in local.samples
    ]
    assert remote.counts() == local.counts() and remote.counts()["val"] > 0


@pytest.mark.slow  # two whole train commands against a local S3 server
def test_train_and_predict_from_an_object_store(object_store, cache_dir, tmp_path):
    by_uri, by_path = listings(object_store, tmp_path)
    env = object_store.env
    for listing, model in ((by_uri, "remote"), (by_path, "local")):
        done = headstart(
            "train", str(listing), "-o", str(tmp_path / model), cache_dir=cache_dir, env=env
        )
        assert done.returncode == 0, done.stderr
    weights = [
        load_file(next((tmp_path / m).glob("model-*.safetensors"))) for m in ("remote", "local")
    ]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:  # the same images, the same split: the same model
        assert np.array_equal(weights[0][name], weights[1][name]), name
    info = [json.loads((tmp_path / m / "headstart.json").read_text()) for m in ("remote", "local")]
    assert info[0]["summary"]["used"] == info[1]["summary"]["used"]
    assert info[0]["summary"]["val_accuracy"] == info[1]["summary"]["val_accuracy"]

    keys = ["daisy/" + p.name for p in sorted((object_store.folder / "daisy").glob("*.jpg"))[:3]]
    manifest = tmp_path / "manifest.csv"  # URIs, one of an object that is not there
    uris = [object_store.uri(k) for k in [*keys, "daisy/gone.jpg"]]
    manifest.write_text("path\n" + "\n".join(uris) + "\n")
    remote = headstart(
        "predict", str(tmp_path / "remote"), str(manifest), "--csv", cache_dir=cache_dir, env=env
    )
    assert remote.returncode == 0, remote.stderr
    files = [str(object_store.folder / k) for k in keys]
    local = headstart("predict", str(tmp_path / "remote"), *files, "--csv", cache_dir=cache_dir)
    got = list(csv.DictReader(io.StringIO(remote.stdout)))
    want = list(csv.DictReader(io.StringIO(local.stdout)))
    assert [r["path"] for r in got] == uris
    assert [r["label"] for r in got[:3]] == [r["label"] for r in want]
    assert not got[3]["label"] and "gone.jpg" in got[3]["path"] and got[3]["error"]


def test_uris_without_pyarrow_are_one_clear_error(monkeypatch):
    import sys

    from headstart.data import locations
    from headstart.errors import HeadstartError

    locations._filesystem.cache_clear()
    monkeypatch.setitem(sys.modules, "pyarrow.fs", None)  # as if not installed
    with pytest.raises(HeadstartError, match=r"need pyarrow: pip install 'headstart\[ray\]'"):
        read_file(ObjectURI("s3://photos/daisy/a.jpg"))
    locations._filesystem.cache_clear()


@pytest.mark.slow
def test_the_doctor_examines_a_dataset_listed_by_uri(object_store, cache_dir, tmp_path):
    """Findings name objects by their URIs (a URI is never made into a local path)."""
    by_uri, _ = listings(object_store, tmp_path)
    first = by_uri.read_text().splitlines()[0]
    with by_uri.open("a") as listing:  # the same object under the other label: a conflict
        listing.write(first.rsplit(",", 1)[0] + ",sunflower\n" if "daisy" in first else "")
    result = headstart(
        "doctor", str(by_uri), "-o", str(tmp_path / "doctor"), "--json",
        cache_dir=cache_dir, env=object_store.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    findings = json.loads(result.stdout)["findings"]
    conflicts = [f["path"] for f in findings if f["issue"] == "exact-conflict"]
    assert conflicts and all(path.startswith("s3://photos/") for path in conflicts)


def test_a_store_error_of_many_lines_is_one_line_in_every_row(monkeypatch):
    """Before: hdfs:// without a JVM put a 90-line message into every row and CSV cell."""
    long = OSError("HDFS connection failed\n" + "\n".join(f"  at frame {n}" for n in range(90)))

    def failing(location):
        raise long

    monkeypatch.setattr("headstart.data.locations.read_image", failing)
    assert read_file("hdfs://namenode/photos/a.jpg") == "unreadable: HDFS connection failed"


class Listener:
    """A TCP port that records what is sent to it and answers each request 404."""

    def __init__(self) -> None:
        import socket
        import threading

        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._answer, daemon=True).start()

    def _answer(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:  # closed
                return
            with connection:
                connection.settimeout(2)
                try:
                    self.received.append(connection.recv(65536))
                    connection.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass


def test_a_listing_cannot_send_the_credentials_to_a_host_it_names(
    trained, cache_dir, tmp_path, monkeypatch
):
    """Before: `s3://b/k?endpoint_override=HOST&scheme=http` in a listing sent a signed request
    with the environment's access key ID to HOST, over plain HTTP."""
    listener = Listener()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMTHEENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("HEADSTART_URI_OPTIONS", raising=False)
    steered = f"s3://lure/k.jpg?endpoint_override=127.0.0.1:{listener.port}&scheme=http"
    listing = tmp_path / "listing.csv"
    listing.write_text(f"path\n{steered}\n{steered.replace('k.jpg', 'j.jpg')}\n")
    _, model = trained
    result = headstart("predict", str(model), str(listing), "--json", cache_dir=cache_dir)
    assert "refused" in result.stdout + result.stderr, result.stderr
    assert read_file(steered).startswith("unreadable: options in an image's URI (?...) are refused")
    assert listener.received == []
    # The user's own environment still chooses the endpoint.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{listener.port}")
    assert read_file(ObjectURI("s3://chosen-by-the-user/k.jpg")).startswith("unreadable:")
    assert listener.received and b"/chosen-by-the-user/k.jpg" in listener.received[0]
