"""The web UI and its JSON API in process (httpx through FastAPI's TestClient): pages and API on
a ledger and archive the real pipeline filled from real clips; range requests; media that
tries to leave the archive; markup from cameras and OCR; the token rules; the requeue, pause
and resume actions; plate matching (exact, partial, one OCR confusion) in the API and the CLI."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTDATA, Pipeline, chain_settings, drop, write_settings
from fastapi.testclient import TestClient
from sqlalchemy import text
from test_cli import dashspool, write_config
from test_labels import T0, A, clip, ev, facts, labelled, plate, track
from web_home import FRONT, LATER, MODEL, REAR, TOKEN, WebHome, settings, web_home

from watchers import app as wiring
from watchers.config import Policies, parse
from watchers.errors import ConfigError
from watchers.labels import plate_variants
from watchers.ledger import Ledger
from watchers.sidecar import EventKind
from watchers.web import LOOPBACK_HOSTS, create_app
from watchers.web.security import check_bind, load_token

__all__ = ["web_home"]  # the session fixture, imported for pytest
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HTML = {"accept": "text/html"}


@pytest.fixture
def client(web_home: WebHome) -> Iterator[TestClient]:
    with TestClient(create_app(web_home.policies, token=TOKEN)) as c:
        yield c


def page_data(html: str) -> Any:
    m = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html, re.S)
    assert m, "the page carries its data block"
    return json.loads(m.group(1))


# ------------------------------------------------------------------ pages and API, real data
@pytest.mark.testdata
def test_trips_list_trip_api_and_page(client: TestClient, web_home: WebHome) -> None:
    (trip,) = client.get("/api/trips").json()
    front = web_home.video(FRONT)
    assert trip["trip_id"] == front.trip_id and trip["clips"] == 3 and trip["distance_m"] > 50
    home = client.get("/", headers=HTML)
    assert home.status_code == 200 and f'href="/trips/{trip["trip_id"]}"' in home.text
    assert "2026-05-13" in home.text

    detail = client.get(f"/api/trips/{trip['trip_id'][:10]}").json()  # a prefix will do
    names = [c["source_name"] for c in detail["clips"]]
    assert sorted(names) == sorted([FRONT, REAR, LATER])
    assert len(detail["points"]) >= 14 and detail["plates"] and detail["detections"]
    assert all(p["trip_id"] == trip["trip_id"] for p in detail["plates"])

    page = client.get(f"/trips/{trip['trip_id']}", headers=HTML)
    assert page.status_code == 200
    data = page_data(page.text)
    assert len(data["points"]) == len(detail["points"])
    assert {p["text"] for p in data["plates"]} == {p["text"] for p in detail["plates"]}
    assert data["detections"] and all(d["lat"] is not None for d in data["detections"])
    assert 'id="map"' in page.text and "/static/vendor/leaflet/leaflet.js" in page.text
    chart = re.search(r'<polyline points="([^"]+)"', page.text)
    assert chart and len(chart.group(1).split()) >= 10, "the speed chart has a line"
    for p in detail["plates"]:
        assert f'href="/clips/{p["video_id"]}?t={p["time_s"]:.1f}"' in page.text
    assert "of {} plates".format(len(detail["plates"])) not in page.text


def test_a_long_trip_lists_the_first_rows_and_maps_them_all(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watchers.web import pages

    monkeypatch.setattr(pages, "TABLE_ROWS", 1)
    (trip,) = client.get("/api/trips").json()
    detail = client.get(f"/api/trips/{trip['trip_id']}").json()
    page = client.get(f"/trips/{trip['trip_id']}", headers=HTML).text
    plates = re.search(r'<table id="plates">(.*?)</table>', page, re.S)
    assert plates and plates.group(1).count("<tr>") == 2, "a header and one row"
    assert f"The first 1 of {len(detail['plates'])} plates" in page
    assert len(page_data(page)["plates"]) == len(detail["plates"]), "all on the map"
    objects = len(detail["detections"])
    assert detail["detections_total"] == objects > 1
    assert f"1 of {objects} objects listed" in page and "best-scored" not in page

    monkeypatch.setattr(pages, "MAP_OBJECTS", 1)
    page = client.get(f"/trips/{trip['trip_id']}", headers=HTML).text
    best = max(detail["detections"], key=lambda d: d["score"])
    (marker,) = page_data(page)["detections"]
    assert (marker["video_id"], marker["t"]) == (best["video_id"], best["first_s"])
    assert f"1 of {objects} objects listed; the map shows the 1 best-scored" in page


@pytest.mark.testdata
def test_clip_api_and_page(client: TestClient, web_home: WebHome) -> None:
    front, rear = web_home.video(FRONT), web_home.video(REAR)
    body = client.get(f"/api/clips/{front.video_id[:8]}").json()
    assert body["clip"]["video_id"] == front.video_id
    assert [s["video_id"] for s in body["siblings"]] == [rear.video_id], "the same moment"
    media = body["media"]
    assert media["video"] == f"/media/{front.video_id}/preview.mp4" == media["preview"]
    assert media["clip"] == f"/media/{front.video_id}/{FRONT}"
    assert body["plates"] and all(f"{p['crop']}" in media["thumbs"] for p in body["plates"])
    assert body["points"] and body["detections"]

    page = client.get(f"/clips/{front.video_id}?t=2.5", headers=HTML)
    assert page.status_code == 200
    assert f'src="/media/{front.video_id}/preview.mp4"' in page.text
    assert 'data-start="2.5"' in page.text
    assert f'src="/media/{rear.video_id}/preview.mp4"' in page.text, "the rear channel beside"
    for p in body["plates"]:
        assert f'data-t="{p["time_s"]:.2f}"' in page.text, "the timeline seeks to each plate"
        assert f"/media/{front.video_id}/thumbs/{p['crop']}" in page.text
    assert len(page_data(page.text)["points"]) == len(body["points"])
    for url in re.findall(r'src="(/media/[^"]+)"', page.text):
        assert client.get(url).status_code == 200, url


@pytest.mark.testdata
def test_plate_search_exact_partial_and_one_ocr_confusion(
    client: TestClient, web_home: WebHome
) -> None:
    plates = client.get("/api/plates", params={"limit": 100}).json()
    assert plates, "heavy read plates from the photos"
    # a read with a character OCR confuses: swap it for its twin and search again
    key = next(p["text"] for p in plates if re.search(r"[0O8B1I5S2Z]", p["text"]))
    i = re.search(r"[0O8B1I5S2Z]", key).start()  # type: ignore[union-attr]
    twin = {"0": "O", "O": "0", "8": "B", "B": "8", "1": "I", "I": "1", "5": "S", "S": "5"}
    twin |= {"2": "Z", "Z": "2"}
    confused = key[:i] + twin[key[i]] + key[i + 1 :]

    def found(q: str, match: str) -> set[str]:
        r = client.get("/api/plates", params={"q": q, "match": match})
        assert r.status_code == 200, r.text
        return {p["text"] for p in r.json()}

    assert key in found(key.lower(), "exact")
    assert key not in found(confused, "exact")
    assert key in found(confused, "fuzzy")
    assert key in found(key[1:-1], "partial") and key not in found(key[1:-1], "prefix")
    assert client.get("/api/plates", params={"q": " - "}).status_code == 422

    page = client.get("/search", params={"plate": confused, "match": "fuzzy"}, headers=HTML)
    hit = next(p for p in plates if p["text"] == key)
    link = f'href="/clips/{hit["video_id"]}?t={hit["time_s"]:.1f}"'
    assert link in page.text and f"/thumbs/{hit['crop']}" in page.text

    # the CLI's `ledger plates` shares the matching
    cfg = write_settings(web_home.root / "policies.toml", settings(TESTDATA / MODEL))
    r = dashspool(
        "--config",
        str(cfg),
        "ledger",
        "plates",
        confused,
        "--match",
        "fuzzy",
        "--json",
        cwd=web_home.root,
    )
    assert r.returncode == 0, r.stderr
    assert key in {p["text"] for p in json.loads(r.stdout)}


@pytest.mark.testdata
def test_detections_near_and_search_pages(client: TestClient, web_home: WebHome) -> None:
    cars = client.get("/api/detections", params={"label": "car"}).json()
    assert cars and {d["label"] for d in cars} == {"car"}
    assert client.get("/api/detections", params={"since": "2030-01-01T00:00:00Z"}).json() == []
    d = cars[0]
    near = client.get("/api/near", params={"lat": d["lat"], "lon": d["lon"], "radius_m": 50})
    assert near.status_code == 200 and near.json()[0]["distance_m"] <= 50
    assert client.get("/api/near", params={"lat": 91, "lon": 0}).status_code == 422

    page = client.get("/search", params={"label": "car", "since": "2026-05-13"}, headers=HTML)
    assert page.text.count('class="result-link"') == min(len(cars), 100)
    page = client.get("/search", params={"lat": d["lat"], "lon": d["lon"], "radius_m": "50"})
    assert 'id="near-results"' in page.text and "/clips/" in page.text
    page = client.get("/search", params={"lat": "north", "lon": "0"})
    assert "latitude: a number" in page.text


@pytest.mark.testdata
def test_video_range_requests(client: TestClient, web_home: WebHome) -> None:
    front = web_home.video(FRONT)
    url = f"/media/{front.video_id}/preview.mp4"
    whole = client.get(url)
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    size = len(whole.content)
    part = client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{size}"
    assert part.content == whole.content[100:200]
    tail = client.get(url, headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == whole.content[-50:]
    assert client.get(url, headers={"Range": f"bytes={size + 10}-"}).status_code == 416


@pytest.mark.testdata
def test_media_never_leaves_the_archive(client: TestClient, web_home: WebHome) -> None:
    front = web_home.video(FRONT)
    base = f"/media/{front.video_id}"
    secret = web_home.root / "secret.txt"
    secret.write_text("not for the web")
    entry = web_home.root / "archive" / Path(str(front.archive_path)).parent
    link = entry / "thumbs" / "escape.jpg"
    link.symlink_to(secret)
    folder_link = entry / "thumbs" / "up"
    folder_link.symlink_to(web_home.root)
    try:
        for path in (
            f"{base}/thumbs/escape.jpg",  # a symlink out of the archive
            f"{base}/thumbs/up/secret.txt",
            f"{base}/..%2f..%2f..%2f..%2f..%2fsecret.txt",
            f"{base}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
            f"{base}/thumbs/..%2f..%2fmeta.json",
            f"{base}/%2fetc%2fpasswd",
            f"{base}/.hidden",
            "/media/..%2f..%2fsecret.txt/x",
            f"/media/{'f' * 16}/meta.json",  # no such clip
        ):
            r = client.get(path)
            assert r.status_code == 404, (path, r.status_code)
            assert b"not for the web" not in r.content
        media = client.get(f"/api/clips/{front.video_id}").json()["media"]
        assert "escape.jpg" not in media["thumbs"] and "up" not in media["thumbs"]
        assert client.get(f"{base}/meta.json").status_code == 200
    finally:
        link.unlink()
        folder_link.unlink()


@pytest.mark.testdata
def test_pipeline_status_pause_and_resume(client: TestClient, web_home: WebHome) -> None:
    status = client.get("/api/status").json()
    assert list(status["stages"]) == ["ingest", "preprocess", "heavy", "archive"]
    assert status["stages"]["archive"]["done"] == 3
    (rejected,) = [f for f in status["failures"] if f["kind"] == "drop.rejected"]
    assert "not a video" in rejected["reason"]
    assert client.post("/api/stages/heavy/pause").status_code == 401
    try:
        r = client.post("/api/stages/heavy/pause", headers=AUTH, params={"reason": "test"})
        assert r.status_code == 200 and r.json() == {
            "stage": "heavy",
            "paused": True,
            "changed": True,
        }
        page = client.get("/pipeline", headers=HTML).text
        assert re.search(r'<tr data-stage="heavy" class="paused">', page)
        assert 'data-url="/api/stages/heavy/resume"' in page and "not a video" in page
    finally:
        r = client.post("/api/stages/heavy/resume", headers=AUTH)
    assert r.json()["changed"] is True
    assert client.get("/api/status").json()["stages"]["heavy"]["paused"] is False
    assert client.post("/api/stages/nosuch/pause", headers=AUTH).status_code == 404


# ------------------------------------------------------------- markup, tokens, headers, actions
@pytest.fixture
def marked_up(tmp_path: Path, make_policies: Any) -> Policies:
    """A ledger whose camera and OCR strings carry markup."""
    policies: Policies = make_policies()
    led = Ledger(policies.ledger_path)
    clip(led, A, T0)
    evil = '<script>alert("x")</script>'
    led.ingest(
        [
            ev(EventKind.VIDEO_NEW, "ingest", A, T0, source_name=f"{evil}.MP4"),
            labelled(
                A,
                facts(
                    [track(3, label='<img src=x onerror="alert(1)">')],
                    [plate(3, text="<b>M5</b>XSX")],
                ),
            ),
        ],
        T0,
    )
    with led.transaction() as s:  # a channel letter the ledger would never get from ingest
        s.execute(text("UPDATE videos SET channel = '<i>F</i>' WHERE video_id = :v"), {"v": A})
    led.close()
    return policies


def test_markup_from_cameras_and_ocr_is_inert(marked_up: Policies) -> None:
    with TestClient(create_app(marked_up, token=None)) as c:
        trip_id = c.get("/api/trips").json()[0]["trip_id"]
        pages = [
            c.get("/", headers=HTML),
            c.get(f"/trips/{trip_id}", headers=HTML),
            c.get(f"/clips/{A}", headers=HTML),
            c.get("/search", params={"label": '<img src=x onerror="alert(1)">'}, headers=HTML),
            c.get("/search", params={"plate": "<b>M5</b>XSX", "match": "exact"}, headers=HTML),
            c.get("/clips/<script>x</script>", headers=HTML),
        ]
        for r in pages:
            assert "<script>alert" not in r.text and "<img src=x" not in r.text
            assert "<i>F</i>" not in r.text
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;.MP4" in pages[2].text
        assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in pages[1].text
        assert 'href="/clips/' in pages[4].text, "the plate key dropped the markup: M5XSX"
        data = page_data(pages[1].text)  # the JSON block decodes back to the same text
        assert data["detections"][0]["label"] == '<img src=x onerror="alert(1)">'
        assert "\\u003cimg" in pages[1].text
        assert pages[5].status_code == 404
        assert c.get(f"/api/clips/{A}").json()["clip"]["source_name"].startswith("<script>")


def test_security_headers_and_loopback_host_names(marked_up: Policies) -> None:
    with TestClient(create_app(marked_up, token=None)) as c:
        for path in ("/", "/api/trips", "/static/app.css", "/openapi.json"):
            r = c.get(path)
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
            assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"
    app = create_app(marked_up, token=None, allowed_hosts=LOOPBACK_HOSTS)
    with TestClient(app, base_url="http://127.0.0.1:8080") as c:
        assert c.get("/api/trips").status_code == 200
        assert c.get("/api/trips", headers={"host": "localhost:8080"}).status_code == 200
        assert c.get("/api/trips", headers={"host": "[::1]:8080"}).status_code == 200
        assert c.get("/api/trips", headers={"host": "evil.example:8080"}).status_code == 421
    with_tiles = marked_up.model_copy(
        update={"web": marked_up.web.model_copy(update={"tile_url": "https://{s}.t.test/{z}.png"})}
    )
    with TestClient(create_app(with_tiles, token=None)) as c:
        assert (
            "img-src 'self' data: https://*.t.test" in c.get("/").headers["content-security-policy"]
        )


def test_no_inline_script_in_any_template() -> None:
    folder = Path(__file__).parents[1] / "watchers" / "web" / "templates"
    for page in folder.glob("*.html"):
        body = page.read_text()
        for tag in re.findall(r"<script[^>]*>", body):
            assert "src=" in tag or 'type="application/json"' in tag, (page.name, tag)
        assert not re.search(r"\son[a-z]+=", body), f"{page.name}: an inline event handler"
        assert " style=" not in body, f"{page.name}: an inline style (CSP refuses it)"


def test_token_from_environment_or_a_private_file(tmp_path: Path) -> None:
    assert load_token({}) is None
    assert load_token({"DASHSPOOL_WEB_TOKEN": f" {TOKEN}\n"}) == TOKEN
    with pytest.raises(ConfigError, match="at least 16"):
        load_token({"DASHSPOOL_WEB_TOKEN": "short"})
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    f.chmod(0o640)
    with pytest.raises(ConfigError, match="owner only"):
        load_token({"DASHSPOOL_WEB_TOKEN_FILE": str(f)})
    f.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert load_token({"DASHSPOOL_WEB_TOKEN_FILE": str(f)}) == TOKEN
    with pytest.raises(ConfigError, match="cannot read"):
        load_token({"DASHSPOOL_WEB_TOKEN_FILE": str(tmp_path / "missing")})
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("localhost", None)
    check_bind("0.0.0.0", TOKEN)
    for host in ("0.0.0.0", "192.168.1.10", "::", "nas.local"):
        with pytest.raises(ConfigError, match="needs a token"):
            check_bind(host, None)


def test_cli_web_refuses_a_public_bind_without_a_token(tmp_path: Path) -> None:
    write_config(tmp_path, '[web]\ntoken = "x"\n')
    r = dashspool("--config", str(tmp_path / "policies.toml"), "web", cwd=tmp_path)
    assert r.returncode == 3 and "web.token: unknown key" in r.stderr, "never in policies.toml"
    write_config(tmp_path)
    r = dashspool(
        "--config", str(tmp_path / "policies.toml"), "web", "--host", "0.0.0.0", cwd=tmp_path
    )
    assert r.returncode == 3 and "needs a token" in r.stderr
    f = tmp_path / "token"
    f.write_text(TOKEN)
    f.chmod(0o644)
    r = dashspool(
        "--config",
        str(tmp_path / "policies.toml"),
        "web",
        "--host",
        "0.0.0.0",
        cwd=tmp_path,
        DASHSPOOL_WEB_TOKEN_FILE=str(f),
    )
    assert r.returncode == 3 and "owner only" in r.stderr


def test_actions_need_the_token_and_requeue_a_failed_job(tmp_path: Path) -> None:
    data = chain_settings(("a", "b"), retry={"max_attempts": 1})
    data["stages"]["b"]["failure_rate"] = 1.0
    policies = parse(data, source=None, base_dir=tmp_path)
    spool = wiring.open_spool(policies)
    spool.ensure_layout(policies.order())
    drop(spool, "2026_0513_160000_clip.MP4")
    p = Pipeline(spool, policies)
    p.start()
    try:
        p.drain()
    finally:
        p.close()
    failed = tmp_path / "spool" / "b" / "failed"
    (job,) = [n for n in os.listdir(failed) if not n.endswith(".error.json")]
    video_id = spool.read_sidecar_at(f"b/failed/{job}").video_id
    url = f"/api/clips/{video_id}/requeue"
    with TestClient(create_app(policies, token=None)) as c:
        r = c.post(url, headers=AUTH)
        assert r.status_code == 403 and "read-only" in r.json()["detail"]
    with TestClient(create_app(policies, token=TOKEN)) as c:
        assert c.post(url).status_code == 401
        assert c.post(url, headers={"Authorization": "Bearer wrong-token-wrong"}).status_code == 401
        assert c.post(url, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        r = c.post(url, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json() == {"job": job, "stage": "b", "from": "failed", "to": "inbox"}
        assert job in os.listdir(tmp_path / "spool" / "b" / "inbox")
        again = c.post(url, headers=AUTH)
        assert again.status_code == 404 and "b/inbox" in again.json()["detail"]
        page = c.get("/pipeline", headers=HTML).text
        assert 'id="token"' in page


def test_fuzzy_plate_search_is_index_lookups(tmp_path: Path) -> None:
    assert plate_variants("AB12") == ["AB12", "A812", "AB I2".replace(" ", ""), "ABL2", "AB1Z"]
    assert plate_variants("XY") == ["XY"]
    led = Ledger(tmp_path / "ledger.db")
    clip(led, A, T0)
    led.ingest([labelled(A, facts([track(3), track(4)], [plate(3, "AB12"), plate(4, "ABIZ")]))], T0)
    assert {p.text for p in led.plates("A812", match="fuzzy")} == {"AB12"}
    assert {p.text for p in led.plates("AB1Z", match="fuzzy")} == {"AB12", "ABIZ"}
    assert {p.text for p in led.plates("B1", match="partial")} == {"AB12"}
    assert led.plates("AB1", match="exact") == []
    with led.reading() as s:
        keys = ", ".join(f"'{k}'" for k in plate_variants("AB12"))
        plan = s.execute(
            text(f"EXPLAIN QUERY PLAN SELECT * FROM plates WHERE text IN ({keys})")
        ).all()
    assert "USING INDEX ix_plates_text" in " ".join(str(r[-1]) for r in plan), plan
    led.close()


def test_metrics_route_serves_the_exposition(marked_up: Policies) -> None:
    with TestClient(create_app(marked_up, token=None)) as c:
        r = c.get("/metrics")
    if not (Path(__file__).parents[1] / "watchers" / "metrics.py").is_file():
        assert r.status_code == 503 and "metrics.py" in r.text
        return
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in r.text


@pytest.mark.slow
def test_several_worker_processes_serve_the_same_settings(tmp_path: Path) -> None:
    """``dashspool web --workers 2``: uvicorn's worker processes build the app from the same
    settings file and keep the loopback Host rule."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    import psutil
    from conftest import REPO
    from sambaserver import free_port

    led = Ledger(tmp_path / "elsewhere" / "ledger.db")
    clip(led, A, T0)
    led.close()
    cfg = tmp_path / "policies.toml"
    cfg.write_text('[ledger]\npath = "elsewhere/ledger.db"\n')
    port = free_port()
    command = [sys.executable, "-m", "watchers.cli", "--config", str(cfg), "web"]
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--workers", "2"],
        cwd=REPO,  # not where policies.toml is: the workers must be told
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        body, deadline = None, time.monotonic() + 60
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/trips", timeout=5) as r:
                    body = json.loads(r.read())
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert body is not None, proc.stdout.read().decode() if proc.poll() is not None else ""
        assert len(body) == 1, "the workers read the ledger the settings name"
        children = psutil.Process(proc.pid).children()
        assert sum("python" in c.name() for c in children) >= 2, [c.cmdline() for c in children]
        other = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/trips", headers={"Host": "rebind.test"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(other, timeout=5)
        assert refused.value.code == 421
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
