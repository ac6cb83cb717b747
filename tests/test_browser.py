"""The web page at / in headless Chromium: pick real photos, see their labels as bars."""

import os

import pytest
from conftest import CHROMEDRIVER, CHROMIUM, copy_photos, real_photos, running

from headstart.export.runtime import OnnxClassifier
from headstart.serving.app import create_app

pytestmark = pytest.mark.slow  # a browser's start and a page load: seconds each
if not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"):
    pytest.skip("Debian's chromium and chromium-driver are not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def server_url(exported_with_heat_maps):
    with running(lambda port: create_app(OnnxClassifier(exported_with_heat_maps[1]))) as url:
        yield url


def test_picking_photos_shows_their_labels_as_bars_and_heat_maps(
    server_url, browser, exported, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server_url)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: "daisy, sunflower" in d.find_element(By.ID, "labels").text)
    photos = real_photos("daisy", 1, skip=19) + real_photos("sunflower", 1, skip=19)
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in photos))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".result")) == 2)
    rows = browser.find_elements(By.CSS_SELECTOR, ".result")
    expected = OnnxClassifier(exported[1]).predict(photos, top_k=2)
    for row, prediction in zip(rows, expected, strict=True):
        labels = [bar.text.split()[0] for bar in row.find_elements(By.CSS_SELECTOR, ".bar")]
        assert labels == prediction.labels  # the model's ranking, most probable first
        overlay = row.find_element(By.CSS_SELECTOR, "img.overlay")  # the photo and its map
        assert overlay.get_property("naturalWidth") >= 360
    screenshot = tmp_path / "page.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000


def test_report_renders_offline_with_its_figures(trained, presplit, cache_dir, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from headstart.evaluation.report import write_report

    classifier, _ = trained
    page = write_report(classifier, presplit, tmp_path / "report")
    browser.get(page.as_uri())
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) >= 5
    assert all(image.get_property("naturalWidth") > 0 for image in images)
    tables = browser.find_elements(By.CSS_SELECTOR, "table.sortable")
    assert len(tables) == 2  # the most-confused pairs, then per class: columns count per table
    table = tables[1]
    recall = table.find_elements(By.TAG_NAME, "th")[2]
    assert recall.text == "recall"
    recall.click()
    values = [
        float(r.find_elements(By.TAG_NAME, "td")[2].text)
        for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    assert values == sorted(values)
    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    gallery = browser.find_elements(By.CSS_SELECTOR, ".gallery")[-1]
    browser.execute_script("arguments[0].scrollIntoView()", gallery)
    assert "speaks for that label" in browser.page_source  # the photos carry heat maps
    screenshot = tmp_path / "gallery.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000


def test_labelling_twenty_photos_with_the_keyboard(browser, cache_dir, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from headstart.context import RunContext
    from headstart.labelling.page import create_label_app
    from headstart.labelling.session import Session
    from headstart.labelling.suggest import default_extractor
    from headstart.serving.app import allowed_hosts

    daisies, sunflowers = real_photos("daisy", 16, skip=20), real_photos("sunflower", 16, skip=20)
    truth = {p.name: "daisy" for p in daisies} | {p.name: "sunflower" for p in sunflowers}
    pool = copy_photos(daisies + sunflowers, tmp_path / "pool")
    extractor = default_extractor(pool, RunContext(cache_dir=cache_dir))
    session = Session(pool, tmp_path / "labelled", ["daisy", "sunflower"], extractor)

    def make_app(port):
        return create_label_app(session, "t0k3n", allowed_hosts("127.0.0.1", port))

    with running(make_app) as url:
        browser.get(url + "#token=t0k3n")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card.focus img[src^='blob:']"))
        accepted = 0

        def press(key):
            """A key, then until the page has drawn the answer (its count of photos left)."""
            before = browser.find_element(By.ID, "status").text
            ActionChains(browser).send_keys(key).perform()
            wait.until(lambda d: d.find_element(By.ID, "status").text != before)

        for number in range(20):
            card = browser.find_element(By.CSS_SELECTOR, ".card.focus")
            label = truth[card.get_attribute("data-name")]
            suggested = card.find_element(By.CSS_SELECTOR, ".suggested").text.lstrip("⏎ ")
            if suggested == label:
                press(Keys.ENTER)
                accepted += 1
            else:
                press("1" if label == "daisy" else "2")
            if number == 9:  # a skip, taken back: the photo comes back first
                skipped = browser.find_element(By.CSS_SELECTOR, ".card.focus")
                name = skipped.get_attribute("data-name")
                press("x")
                press("u")
                back = browser.find_element(By.CSS_SELECTOR, ".card.focus")
                assert back.get_attribute("data-name") == name
        session.wait()
        browser.refresh()
        wait.until(lambda d: "Cross-validated accuracy: " in d.find_element(By.ID, "status").text)
        status = browser.find_element(By.ID, "status").text
        screenshot = tmp_path / "label.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    written = sorted((tmp_path / "labelled").rglob("*.jpg"))
    assert len(written) == 20 and all(truth[p.name] == p.parent.name for p in written)
    assert accepted >= 5  # the refitted head's suggestions were right often enough to accept
    progress = session.progress()
    assert progress.refits >= 4 and progress.accuracy is not None
    assert f"{100 * progress.accuracy:.1f}%" in status and "photos left" in status
