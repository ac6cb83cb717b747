"""`export --web`: a static folder that classifies photos and the webcam in the browser alone."""

import contextlib
import functools
import json
import os
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import CHROMEDRIVER, CHROMIUM, XRAYS, headstart, real_photos

from headstart import HeadstartError
from headstart.export import web_page
from headstart.export.runtime import OnnxClassifier
from headstart.export.web_page import export_web_page

PHOTOS = real_photos("daisy", 4, skip=20) + real_photos("sunflower", 4, skip=20) + XRAYS[:2]


@pytest.fixture(scope="module")
def page(trained, tmp_path_factory):
    classifier, _ = trained
    vendored = web_page.runtime_folder() / web_page.RUNTIME_FILES[-1]
    if not vendored.is_file() and not os.environ.get("CI"):
        pytest.skip("onnxruntime-web is not vendored: scripts/vendor_web.sh needs npm")
    return classifier, export_web_page(classifier, tmp_path_factory.mktemp("web") / "page")[
        0
    ].parent


@contextlib.contextmanager
def static_host(folder):
    """The folder on a plain static web server (Python's), as a user would host it."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join(timeout=10)


def test_the_folder_holds_the_page_the_any_size_model_and_the_runtime(page):
    classifier, folder = page
    names = {p.name for p in folder.iterdir()}
    assert {"index.html", "model.onnx", "model.json", "ort-wasm-simd-threaded.wasm"} <= names
    settings = json.loads((folder / "model.json").read_text())
    assert settings["labels"] == classifier.labels and settings["format"] == "headstart-web/1"
    assert settings["unknown_threshold"] == pytest.approx(classifier.unknown.stats.threshold)
    assert OnnxClassifier(folder / "model.onnx").any_size
    html = (folder / "index.html").read_text()
    assert "content=\"default-src 'self'" in html  # the browser refuses any other host
    assert not re.search(r"(src=|href=|import .*from )[\"']https?:", html)


def test_a_folder_of_other_things_or_a_missing_runtime_is_refused(trained, tmp_path, monkeypatch):
    classifier, folder = trained
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(HeadstartError, match="holds other files"):
        export_web_page(classifier, tmp_path)
    monkeypatch.setattr(web_page, "RUNTIME_FILES", ("ort-missing.wasm",))
    with pytest.raises(HeadstartError, match=r"ort-missing\.wasm missing.*vendor_web\.sh"):
        export_web_page(classifier, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    result = headstart("export", str(folder), "--web", str(tmp_path / "w"), "-o", "x.onnx")
    assert result.returncode != 0 and "no -o" in result.stderr


needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
    reason="Debian's chromium and chromium-driver are not installed",
)


@pytest.mark.slow  # a browser and onnxruntime-web's wasm: seconds
@needs_chromium
def test_the_page_labels_photos_and_the_webcam_as_python_does(page, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    classifier, folder = page
    wait = WebDriverWait(browser, 120)
    with static_host(folder) as url:
        browser.get(url)
        wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-ready"))
        browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in PHOTOS))
        wait.until(lambda d: d.find_element(By.ID, "results").get_attribute("data-done"))
        rows = browser.find_elements(By.CSS_SELECTOR, "#results .bars")
        assert not [r.text for r in rows if r.get_attribute("data-error")]
        shown = [(r.get_attribute("data-label"), float(r.get_attribute("data-probability")))
                 for r in rows]  # fmt: skip
        flagged = [r.get_attribute("data-unknown") == "true" for r in rows]
        browser.find_element(By.ID, "camera").click()
        wait.until(
            lambda d: int(d.find_element(By.ID, "live-bars").get_attribute("data-frames") or 0) >= 3
        )
        live = browser.find_element(By.ID, "live-bars").get_attribute("data-label")
        screenshot = tmp_path / "web-page.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        requests = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
    python = classifier.predict(PHOTOS, top_k=1)
    assert [label for label, _ in shown] == [p.labels[0] for p in python]
    gaps = [abs(p - q.probabilities[0]) for (_, p), q in zip(shown, python, strict=True)]
    assert max(gaps) < 0.02, gaps
    assert flagged == [p.unknown for p in python]
    assert live in classifier.labels
    assert requests and all(r.startswith(url) for r in requests)  # nothing from another host
