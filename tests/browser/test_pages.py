"""Each app's page in a real browser: headless Chromium from Debian (``chromium``,
``chromium-driver``; ``make browser`` installs them) driven by Selenium against the running
apps. Each page loads, performs its main action, and shows the result; the browser's console
has no error. ``MLSD_SCREENSHOTS=<dir>`` saves a screenshot of each page (README's)."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ray import serve

from apps import blurring, harmful_content, recommendation, video_search, visual_search
from tests.conftest import catalogue_images, new_objects, new_store, png_bytes

pytestmark = [pytest.mark.serve, pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
WAIT_S = 90


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("MLSD_REQUIRE_BROWSER") == "1":  # make test sets it: CI must run these
            pytest.fail("chromium / chromedriver missing: run `make browser`")
        pytest.skip("chromium / chromedriver not installed (make browser)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-extensions",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def builders(serve_instance, keys, tmp_path_factory):
    """name -> a function that builds that app (each test deploys only its own: the five
    together ask for more CPUs than the test cluster has)."""

    tmp = tmp_path_factory.mktemp("pages")
    live, videos = new_store(tmp / "live.sqlite"), new_store(tmp / "videos.sqlite")
    events, reviews = new_store(tmp / "events.db"), new_store(tmp / "reviews.sqlite")
    return {
        "visual_search": lambda store: visual_search.build_app(
            visual_search.VisualSearchArgs(
                artifact_store=str(store),
                live_log=live,
                object_store=new_objects(tmp / "vs_objects"),
            )
        ),
        "video_search": lambda store: video_search.build_app(
            video_search.VideoSearchArgs(
                artifact_store=str(store),
                live_log=videos,
                object_store=new_objects(tmp / "video_objects"),
            )
        ),
        "recommendation": lambda store: recommendation.build_app(
            recommendation.RecommendationArgs(artifact_store=str(store), events_log=events)
        ),
        "blurring": lambda store: blurring.build_app(
            blurring.BlurringArgs(
                artifact_store=str(tmp / "none"),
                output_store=new_objects(tmp / "blurred"),
                detector={"members": [{"kind": "yunet", "threshold": 0.5}]},
            )
        ),
        "harmful_content": lambda store: harmful_content.build_app(
            harmful_content.HarmfulContentArgs(
                artifact_store=str(store),
                model={"artifact": "harmful_content", "backend": "onnx"},
                review_queue=reviews,
                policy={"default": {"remove": 1.0, "review": 0.0, "demote": 0.0}},
            )
        ),
    }


@contextmanager
def deployed(serve_instance, builders, name: str, store=None):
    """The app running on its own route prefix for one test; -> its URL."""

    prefix = f"/page-{name.replace('_', '-')}"
    serve.run(builders[name](store), name=f"page_{name}", route_prefix=prefix)
    try:
        yield f"{serve_instance}{prefix}"
    finally:
        serve.delete(f"page_{name}")


def open_page(driver, url: str, token: str) -> None:
    driver.get(f"{url}/#token={token}")  # the page keeps the token; the fragment is never sent
    assert driver.execute_script("return typeof MLSD") == "object"


def wait_for(driver, js: str, what: str):
    """Poll a JavaScript expression until it is truthy; -> its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.25).until(
            lambda d: d.execute_script(f"return {js}")
        )
    except Exception:
        status = driver.execute_script("return document.getElementById('status').textContent")
        raise AssertionError(f"{what}: not shown after {WAIT_S} s; status: {status!r}") from None


def status_says(driver, text: str) -> str:
    return wait_for(
        driver,
        f"(s => s.includes({text!r}) && s)(document.getElementById('status').textContent)",
        f"status with {text!r}",
    )


def finish(driver, name: str) -> None:
    """No error in the browser's console; the screenshot, when asked for."""
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    if out := os.environ.get("MLSD_SCREENSHOTS"):
        Path(out).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(out) / f"{name}.png"))


def images_loaded(selector: str) -> str:
    return (
        f"(imgs => imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)"
        f" && imgs.length)([...document.querySelectorAll({selector!r})])"
    )


def test_visual_search_page(browser, builders, serve_instance, keys, tiny_store, tmp_path):
    with deployed(serve_instance, builders, "visual_search", tiny_store) as url:
        visual_search_page(browser, url, keys, tmp_path)


def visual_search_page(browser, url, keys, tmp_path):
    from selenium.webdriver.common.by import By

    open_page(browser, url, keys["tester"])
    imgs, _ = catalogue_images(10)
    query = tmp_path / "query.png"
    query.write_bytes(png_bytes(imgs[3]))
    browser.find_element(By.ID, "file").send_keys(str(query))
    browser.find_element(By.ID, "search").click()
    status_says(browser, "results")
    assert wait_for(browser, images_loaded(".hit img"), "the hits' thumbnails") == 12
    first = browser.find_element(By.CSS_SELECTOR, ".hit").get_attribute("data-id")
    assert first == "3"  # the query image itself, from the catalogue
    finish(browser, "visual_search")
    # add your own, find it first, delete it
    own = tmp_path / "own.png"
    own.write_bytes(png_bytes((np.random.default_rng(5).random((28, 28)) * 255).astype(np.uint8)))
    browser.find_element(By.ID, "file").send_keys(str(own))
    browser.find_element(By.ID, "add").click()
    added = status_says(browser, "results")
    new_id = browser.find_element(By.CSS_SELECTOR, ".hit").get_attribute("data-id")
    assert int(new_id) > 10**12, added
    browser.find_element(By.CSS_SELECTOR, f'.hit[data-id="{new_id}"] button.danger').click()
    status_says(browser, f"deleted {new_id}")
    assert not browser.find_elements(By.CSS_SELECTOR, f'.hit[data-id="{new_id}"]')


def test_video_search_page(browser, builders, serve_instance, keys, video_store):
    with deployed(serve_instance, builders, "video_search", video_store) as url:
        video_search_page(browser, url, keys)


def video_search_page(browser, url, keys):
    from selenium.webdriver.common.by import By

    open_page(browser, url, keys["tester"])
    browser.find_element(By.ID, "q").send_keys("a man in a suit and bow tie")
    browser.find_element(By.CSS_SELECTOR, "#form button").click()
    status_says(browser, "results")
    assert wait_for(browser, images_loaded(".hit img"), "the thumbnails") >= 1
    first = browser.find_element(By.CSS_SELECTOR, ".hit .title").text
    assert first.startswith("Carphone"), first
    badges = browser.find_element(By.CSS_SELECTOR, ".hit").text
    assert "visual #" in badges and "text #" in badges  # which branch found it
    finish(browser, "video_search")


def test_recommendation_page(browser, builders, serve_instance, keys, rec_store):
    with deployed(serve_instance, builders, "recommendation", rec_store) as url:
        recommendation_page(browser, url, keys)


def recommendation_page(browser, url, keys):
    from selenium.webdriver.common.by import By

    open_page(browser, url, keys["tester"])
    user = browser.find_element(By.ID, "user")
    user.clear()
    user.send_keys("42")
    browser.find_element(By.CSS_SELECTOR, "#form button[type=submit]").click()
    status_says(browser, "strategy personal")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.item")
    assert len(rows) == 10 and all(r.find_element(By.CSS_SELECTOR, ".title").text for r in rows)
    rows[0].find_element(By.CSS_SELECTOR, "button.like").click()
    status_says(browser, "liked")
    finish(browser, "recommendation")


def test_blurring_page(browser, builders, serve_instance, keys, tmp_path):
    with deployed(serve_instance, builders, "blurring") as url:
        blurring_page(browser, url, keys, tmp_path)


def blurring_page(browser, url, keys, tmp_path):
    from selenium.webdriver.common.by import By
    from skimage import data

    open_page(browser, url, keys["tester"])
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(photo, quality=92)
    browser.find_element(By.ID, "file").send_keys(str(photo))
    status_says(browser, " blurred (")
    wait_for(browser, images_loaded("#after"), "the blurred image")
    assert "face" in browser.find_element(By.ID, "boxes").text
    finish(browser, "blurring")


def test_harmful_content_page(browser, builders, serve_instance, keys, harmful_store):
    with deployed(serve_instance, builders, "harmful_content", harmful_store) as url:
        harmful_content_page(browser, url, keys)


def harmful_content_page(browser, url, keys):
    from selenium.webdriver.common.by import By

    open_page(browser, url, keys["tester"])
    browser.find_element(By.ID, "text").send_keys("you people are the worst, get out of here")
    browser.find_element(By.CSS_SELECTOR, "#form button").click()
    status_says(browser, "decision: review")  # every post goes to review under this policy
    assert browser.find_element(By.ID, "action").text == "review"
    rows = wait_for(browser, "document.querySelectorAll('tr.review').length", "the queue")
    assert rows >= 1
    finish(browser, "harmful_content")
    first = browser.find_element(By.CSS_SELECTOR, "tr.review")
    rid = first.get_attribute("data-id")
    first.find_element(By.CSS_SELECTOR, "button.fine").click()
    status_says(browser, f"review #{rid} labelled not harmful")
    wait_for(browser, f"!document.querySelector('tr.review[data-id=\"{rid}\"]')", "the row gone")
