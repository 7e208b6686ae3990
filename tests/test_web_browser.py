"""The web UI in a real browser: Debian's chromium through chromedriver (selenium), against
``dashspool web`` on loopback, serving what the real pipeline made of real clips. Screenshots
go to ``test-artifacts/web/`` (git-ignored)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from web_home import FRONT, TOKEN, Served, served, web_home

__all__ = ["served", "web_home"]  # session fixtures, imported for pytest
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "web"
WAIT = 30  # seconds any one condition may take

pytestmark = [pytest.mark.slow, pytest.mark.testdata]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make system-deps)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,1100",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any, what: str) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    reloads = (StaleElementReferenceException, NoSuchElementException)  # a page reloading
    return WebDriverWait(driver, WAIT, poll_frequency=0.1, ignored_exceptions=reloads).until(
        lambda d: condition(d), message=what
    )


def js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def no_console_errors(driver: Any) -> None:
    """Nothing refused by the CSP, no script error (a missing favicon does not count)."""
    bad = [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "favicon" not in e["message"]
    ]
    assert not bad, bad


def shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def test_trip_page_shows_the_track_and_markers(browser: Any, served: Served) -> None:
    trip = httpx.get(f"{served.url}/api/trips").json()[0]
    detail = httpx.get(f"{served.url}/api/trips/{trip['trip_id']}").json()
    browser.get(f"{served.url}/trips/{trip['trip_id']}")
    wait(browser, lambda d: js(d, "return document.getElementById('map').dataset.ready"), "map")
    track = browser.find_elements("css selector", "#map path.track")
    assert track, "the track is drawn"
    box = js(browser, "return arguments[0].getBBox().height", track[0])
    assert box > 20, "the track spans the map"
    plates = browser.find_elements("css selector", "#map path.marker-plate")
    objects = browser.find_elements("css selector", "#map path.marker-detection")
    assert len(plates) == len([p for p in detail["plates"] if p["lat"] is not None]) > 0
    assert len(objects) == len([d for d in detail["detections"] if d["lat"] is not None]) > 0
    assert browser.find_elements("css selector", "#speed-chart polyline")
    shot(browser, "trip")
    plates[0].click()  # the popup links to the clip at the plate's second
    link = wait(
        browser,
        lambda d: d.find_elements("css selector", ".leaflet-popup-content a"),
        "a plate's popup",
    )[0]
    assert re.search(r"/clips/[0-9a-f]+\?t=\d+\.\d$", link.get_attribute("href"))
    no_console_errors(browser)


def test_plate_search_opens_the_clip_at_the_second(browser: Any, served: Served) -> None:
    plates = httpx.get(f"{served.url}/api/plates").json()
    key = next(p["text"] for p in plates if "0" in p["text"] or "5" in p["text"])
    hit = next(p for p in plates if p["text"] == key)
    confused = key.replace("0", "O", 1) if "0" in key else key.replace("5", "S", 1)
    browser.get(f"{served.url}/search")
    browser.find_element("id", "plate").send_keys(confused.lower())
    browser.find_element("css selector", "#match option[value=fuzzy]").click()
    browser.find_element("id", "search-button").click()
    wait(browser, lambda d: d.find_elements("css selector", "#plate-results a"), "results")
    shot(browser, "search")
    links = browser.find_elements("css selector", "#plate-results a.result-link")
    target = next(a for a in links if a.text.strip() == key)
    target.click()
    wait(browser, lambda d: "/clips/" in d.current_url, "the clip page")
    assert d_t(browser.current_url) == pytest.approx(hit["time_s"], abs=0.05)
    wait(browser, lambda d: js(d, "return document.getElementById('player').readyState") >= 1, "")
    at = wait(
        browser,
        lambda d: js(
            d,
            "const v = document.getElementById('player'); return v.seeking ? null : v.currentTime",
        ),
        "the seek",
    )
    assert at == pytest.approx(hit["time_s"], abs=0.3), "opened at the plate's second"
    shot(browser, "clip-at-plate")
    no_console_errors(browser)


def d_t(url: str) -> float:
    m = re.search(r"[?&]t=([0-9.]+)", url)
    assert m, url
    return float(m.group(1))


def test_the_preview_plays_and_the_map_follows(browser: Any, served: Served) -> None:
    front = served.home.video(FRONT)
    browser.get(f"{served.url}/clips/{front.video_id}")
    support = js(
        browser,
        "return document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.64001F\"')",
    )
    assert support in ("probably", "maybe"), "this chromium plays H.264 (the archive's previews)"
    player = browser.find_element("id", "player")
    assert player.get_attribute("src").endswith("/preview.mp4")
    wait(browser, lambda d: js(d, "return arguments[0].readyState", player) >= 2, "video data")
    start = js(browser, "return document.getElementById('map').dataset.position")
    js(browser, "arguments[0].play()", player)
    wait(browser, lambda d: js(d, "return arguments[0].currentTime", player) > 1.5, "playback")
    assert js(browser, "return arguments[0].error", player) is None
    assert js(browser, "return arguments[0].videoWidth", player) > 0
    moved = wait(
        browser,
        lambda d: (
            (p := js(d, "return document.getElementById('map').dataset.position")) != start and p
        ),
        "the map's position to follow",
    )
    assert moved and start
    sibling = browser.find_elements("css selector", "video.sibling-video")
    assert sibling and js(browser, "return arguments[0].paused", sibling[0]) is False
    js(browser, "arguments[0].pause()", player)
    # a click on the timeline seeks to that second
    plate = browser.find_elements("css selector", "#timeline circle.seek")[0]
    t = float(plate.get_attribute("data-t"))
    plate.click()
    wait(
        browser,
        lambda d: abs(js(d, "return arguments[0].currentTime", player) - t) < 0.5,
        "the timeline's seek",
    )
    shot(browser, "clip-playing")
    no_console_errors(browser)


def test_pipeline_page_shows_a_paused_stage_and_resumes_it(browser: Any, served: Served) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(f"{served.url}/api/stages/heavy/pause", headers=auth)
    assert r.status_code == 200, r.text
    browser.get(f"{served.url}/pipeline")
    row = browser.find_element("css selector", "tr[data-stage=heavy]")
    assert "paused" in row.get_attribute("class") and "PAUSED" in row.text
    assert "not a video" in browser.find_element("id", "failures").text
    shot(browser, "pipeline-paused")
    # without the token the button is refused; with it the stage resumes
    row.find_element("css selector", "button.action").click()
    wait(browser, lambda d: "401" in d.find_element("id", "action-result").text, "the refusal")
    browser.find_element("id", "token").send_keys(TOKEN)
    browser.find_element("id", "token-save").click()
    assert js(browser, "return sessionStorage.getItem('dashspool-token')") == TOKEN
    assert not browser.get_cookies(), "the token is never a cookie"
    browser.find_element("css selector", "tr[data-stage=heavy] button.action").click()
    wait(
        browser,
        lambda d: "running" in d.find_element("css selector", "tr[data-stage=heavy]").text,
        "the page to show heavy running",
    )
    status = httpx.get(f"{served.url}/api/status").json()
    assert status["stages"]["heavy"]["paused"] is False
    shot(browser, "pipeline-resumed")
    messages = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert all("401" in m for m in messages), messages  # only the refused click
    assert json.dumps(status)
