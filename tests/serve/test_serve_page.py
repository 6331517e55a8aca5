"""The web page in a real headless browser (Debian's chromium, driven by Selenium through chromedriver): upload
a coco128 image, wait for the boxes, check that the page lists the API's detections, that the score slider
and the class filter act without a new request, and that the boxes are drawn in the palette's colours.
It saves a screenshot (to $DETZOO_SCREENSHOT when set: docs/images/serve_page.png, the picture of docs/serving.md).

Without chromium and chromedriver this test fails: `apt-get install -y chromium chromium-driver` (.ci/run
and the Makefile install them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import httpx2
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from serve_helpers import ServerProcess, trained_images

from detzoo.visualize import PALETTE

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,800",
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")  # a synthetic webcam


@pytest.fixture(scope="module")
def browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"the browser test needs {', '.join(missing)}: apt-get install -y chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="detzoo-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server(trained_checkpoint):
    server = ServerProcess(trained_checkpoint)
    yield server
    server.stop()


def _listed(driver) -> list[dict]:
    """The detections the page lists (its table rows carry the exact values it was given)."""
    rows = driver.find_elements(By.CSS_SELECTOR, ".card[data-state=done] tr.detection")
    return [{"label": int(row.get_attribute("data-label")), "score": float(row.get_attribute("data-score")),
             "box": json.loads(row.get_attribute("data-box")), "class_name": row.find_elements(By.TAG_NAME, "td")[1].text}
            for row in rows]


def _answered(server, route: str = "/v1/detect", method: str = "POST", status: int = 200) -> float:
    """How many requests to a route the server has answered with a status (its /metrics)."""
    metrics = httpx2.get(f"{server.url}/metrics", timeout=60).text
    pattern = rf'^detzoo_requests_total\{{method="{method}",route="{re.escape(route)}",status="{status}"\}} (\S+)$'
    found = re.search(pattern, metrics, re.M)
    return float(found.group(1)) if found else 0.0


def _set_slider(driver, value: float) -> None:
    driver.execute_script("const s = document.getElementById('score'); s.value = arguments[0];"
                          "s.dispatchEvent(new Event('input'));", str(value))


def _screenshot(driver, folder: Path) -> None:
    """The page as the browser shows it; a copy 960 px wide at $DETZOO_SCREENSHOT (docs/serving.md's)."""
    driver.execute_script("window.scrollTo(0, 0)")
    path = folder / "serve_page.png"
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 0
    if os.environ.get("DETZOO_SCREENSHOT"):
        with Image.open(path) as shot:
            small = shot.convert("RGB").resize((960, round(960 * shot.height / shot.width)), Image.LANCZOS)
            small.quantize(256).save(os.environ["DETZOO_SCREENSHOT"], optimize=True)


def test_the_page_shows_the_apis_detections(browser, server, coco128, tmp_path):
    image = trained_images(coco128, 1)[0]
    answered = _answered(server)
    api = httpx2.post(f"{server.url}/v1/detect", files={"image": (image.name, image.read_bytes(), "image/jpeg")},
                      timeout=300).json()["images"][0]["detections"]
    assert api, "the trained model detects something on its training image"

    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 180)
    wait.until(lambda d: "ssd300_mobilenetv2" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "file").send_keys(str(image))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card[data-state=done], .card[data-state=error]"))
    assert browser.find_element(By.ID, "error").text == ""
    card = browser.find_element(By.CSS_SELECTOR, ".card")
    assert card.get_attribute("data-state") == "done" and image.name in card.text
    assert "round trip" in card.find_element(By.CLASS_NAME, "latency").text
    _screenshot(browser, tmp_path)

    # the slider starts at 0.30: the page lists the API's detections with a score of at least 0.30
    assert _listed(browser) == [d for d in api if d["score"] >= 0.3]
    _set_slider(browser, 0)
    assert _listed(browser) == api  # every detection the API gave, without a new request
    hidden = api[0]["label"]
    browser.find_element(By.CSS_SELECTOR, f"#classes input[data-label='{hidden}']").click()
    assert _listed(browser) == [d for d in api if d["label"] != hidden]
    browser.find_element(By.CSS_SELECTOR, f"#classes input[data-label='{hidden}']").click()
    _set_slider(browser, 0.3)
    assert _answered(server) == answered + 2  # the API call and the page's upload: the filters sent nothing

    # the boxes are drawn in the palette's colour of their class: the middle of each box's left edge
    shown = [d for d in api if d["score"] >= 0.3]
    colours = browser.execute_script(
        "const c = document.querySelector('.card canvas').getContext('2d');"
        "return arguments[0].map(b => Array.from(c.getImageData(Math.round(b[0]), Math.round((b[1] + b[3]) / 2),"
        " 1, 1).data.slice(0, 3)));", [d["box"] for d in shown])
    expected = [[int(PALETTE[d["label"] % len(PALETTE)][i: i + 2], 16) for i in (1, 3, 5)] for d in shown]
    assert any(got == want for got, want in zip(colours, expected)), (colours, expected)


def test_the_webcam_mode_sends_frames_and_draws_the_answers(browser, server):
    """Chromium's synthetic camera stands in for a webcam: frames go to /v1/detect as image/jpeg, one at a time."""
    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 180)
    wait.until(lambda d: "ssd300_mobilenetv2" in d.find_element(By.ID, "model").text)
    button = browser.find_element(By.ID, "webcam")
    button.click()
    card = wait.until(lambda d: next((c for c in d.find_elements(By.CSS_SELECTOR, ".card[data-state=done]")
                                      if "webcam" in c.find_element(By.TAG_NAME, "h3").text), None))
    assert "round trip" in card.find_element(By.CLASS_NAME, "latency").text
    assert button.text == "Stop webcam" and browser.find_element(By.ID, "error").text == ""
    button.click()
    assert button.text == "Start webcam"


def test_the_track_mode_sends_webcam_frames_to_v1_track_and_draws_track_ids(browser, server):
    """``/?track=1``: the synthetic camera's frames go to /v1/track under the page's session (ended with a DELETE
    when the webcam stops); a tracked box is drawn in its track's colour with ``#id`` in its label, and shown
    whatever the score slider says (the tracker chose it)."""
    tracked, ended = _answered(server, "/v1/track"), _answered(server, "/v1/track", "DELETE", 204)
    browser.get(server.url + "/?track=1")
    wait = WebDriverWait(browser, 180)
    wait.until(lambda d: "ssd300_mobilenetv2" in d.find_element(By.ID, "model").text)
    assert browser.find_element(By.ID, "webcam-title").text.lower() == "webcam - tracking"
    button = browser.find_element(By.ID, "webcam")
    button.click()
    wait.until(lambda d: any("webcam (tracking)" in c.find_element(By.TAG_NAME, "h3").text
                             for c in d.find_elements(By.CSS_SELECTOR, ".card[data-state=done]")))
    wait.until(lambda d: _answered(server, "/v1/track") >= tracked + 2)
    assert browser.find_element(By.ID, "error").text == ""
    button.click()
    wait.until(lambda d: _answered(server, "/v1/track", "DELETE", 204) == ended + 1)

    colour, label = browser.execute_script("""
        const card = newCard("synthetic");
        card.bitmap = Object.assign(document.createElement("canvas"), {width: 200, height: 100});
        card.trails = new Map([[7, [[150, 50], [110, 50], [70, 50]]]]);
        card.answer = {images: [{width: 200, height: 100, detections: [
            {box: [20, 20, 60, 80], score: 0.2, label: 0, class_name: "thing", track_id: 7}]}],
            timing_ms: {total: 0, decode: 0, queue: 0, inference: 0, batch_images: 1}};
        card.roundTrip = 0;
        render(card);
        const pixel = card.canvas.getContext("2d").getImageData(20, 50, 1, 1).data;
        return [Array.from(pixel.slice(0, 3)), card.element.querySelector("tr.detection td:nth-child(2)").textContent];
    """)
    assert colour == [int(PALETTE[7][i: i + 2], 16) for i in (1, 3, 5)] and label == "#7 thing"
