"""What the demo page stands on, without a browser: the page and its assets, offline /docs, the
documented 400 and `audio` field, /timeline, exclusive jobs on the inference thread, `emovox demo`."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from helpers import tone

from emovox.inference.recognizer import Recognizer
from emovox.serve.app import create_app
from emovox.serve.limits import ServeConfig
from emovox.serve.queue import InferenceQueue


def wav_bytes(samples: np.ndarray, sr: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def long_recording(path: Path) -> Path:
    """Tones of both classes separated by silence: ~14 s, longer than the model's 10 s crop."""
    parts = []
    for freq in (515, 185, 515, 185, 515):
        parts += [tone(freq, 2.0), np.zeros(int(0.8 * 16_000), np.float32)]
    sf.write(str(path), np.concatenate(parts), 16_000, subtype="PCM_16")
    return path


class Links(HTMLParser):
    """Every URL a page makes the browser fetch: script src, link href, img src."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "audio", "source") and a.get("src"):
            self.urls.append(a["src"])
        if tag == "link" and a.get("href"):
            self.urls.append(a["href"])


def links(html: str) -> list[str]:
    parser = Links()
    parser.feed(html)
    return parser.urls


@pytest.fixture(scope="module")
def audio_rec(audio_recognizer_dir):
    return Recognizer.load(audio_recognizer_dir)


@pytest.fixture(scope="module")
def client(audio_rec):
    with TestClient(create_app(audio_rec, ServeConfig(max_seconds=12, max_timeline_seconds=30))) as c:
        yield c


# --- the page ----------------------------------------------------------------------------------


def test_page_and_its_assets_come_from_the_app_only(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "http" not in csp
    urls = links(r.text)
    assert {"static/demo/demo.js", "static/demo/demo.css"} <= set(urls)
    for url in urls:
        if url.startswith("data:"):
            continue
        assert "://" not in url and not url.startswith("//"), url
        asset = client.get("/" + url.lstrip("/"))
        assert asset.status_code == 200 and asset.content, url
        assert "://" not in asset.text.replace("http://localhost", "").replace("http://127.0.0.1", ""), f"{url} names an external URL"
    assert client.head("/").status_code == 200


# --- /docs offline ----------------------------------------------------------------------------


def test_docs_and_every_asset_they_reference_are_served_by_the_app(client):
    r = client.get("/docs")
    assert r.status_code == 200
    assert "http://" not in r.text and "https://" not in r.text, "the docs page names an external URL"
    urls = links(r.text)
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls) and any(u.endswith("swagger-ui.css") for u in urls)
    for url in urls:
        assert url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, url
    assert '"validatorUrl": null' in r.text  # Swagger UI would otherwise call an online validator
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/redoc").status_code == 404  # ReDoc loads web fonts; it is not served


def test_schema_documents_400_and_the_audio_field(client):
    schema = client.get("/openapi.json").json()
    for path in ("/predict", "/timeline"):
        op = schema["paths"][path]["post"]
        assert {"400", "413", "422", "503"} <= set(op["responses"]), path
        assert "multipart" in op["responses"]["400"]["description"]
        body = op["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
        audio = schema["components"]["schemas"][body]["properties"]["audio"]
        assert audio.get("contentMediaType") == "application/octet-stream" or audio.get("format") == "binary"
        assert "'audio'" in audio["description"]
    assert "form field **`audio`**" in schema["info"]["description"]
    assert "/" not in schema["paths"] and not any(p.startswith("/static") for p in schema["paths"])


@pytest.mark.parametrize(
    "content_type, body, message",
    [
        ("multipart/form-data", b"abc", "Missing boundary"),
        ("multipart/form-data; boundary=x", b"no boundary in here", "Invalid multipart data"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: nonsense\r\n\r\nabc\r\n--x--\r\n", '"name" must be provided'),
    ],
)
def test_malformed_multipart_is_a_json_400(client, content_type, body, message):
    for path in ("/predict", "/timeline"):
        r = client.post(path, content=body, headers={"content-type": content_type})
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "bad_request" and message in r.json()["detail"]


# --- /timeline ----------------------------------------------------------------------------------


def test_timeline_endpoint_equals_predict_timeline(client, audio_rec, tmp_path):
    path = long_recording(tmp_path / "long.wav")
    from emovox.inference.timeline import predict_timeline

    expected = predict_timeline(audio_rec, path).to_dict()
    r = client.post("/timeline", files={"audio": ("my talk.wav", path.read_bytes(), "audio/wav")})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["source"] == "my talk.wav" and got["duration"] == expected["duration"]
    assert [s["label"] for s in got["segments"]] == ["high", "low", "high", "low", "high"]
    assert len(got["segments"]) == len(expected["segments"])
    for g, e in zip(got["segments"], expected["segments"], strict=False):
        assert (g["start"], g["end"], g["label"]) == (e["start"], e["end"], e["label"])
        assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-6)
    assert got["label_seconds"] == expected["label_seconds"]
    fixed = client.post("/timeline", files={"audio": ("a.wav", path.read_bytes(), "audio/wav")}, data={"mode": "fixed"}).json()
    assert fixed["segmentation"]["mode"] == "fixed" and fixed["segments"][1]["start"] == 3.0


def test_timeline_errors_are_named(client, tmp_path):
    r = client.post("/timeline", files={"audio": ("notes.wav", b"not audio at all", "audio/wav")})
    assert r.status_code == 422 and r.json()["error"] == "bad_audio"
    assert "notes.wav" in r.json()["detail"] and "emovox-upload" not in r.json()["detail"]
    r = client.post("/timeline", files={"audio": ("hour.wav", wav_bytes(tone(200, 31.0, sr=8000), 8000), "audio/wav")})
    assert r.status_code == 422 and r.json()["error"] == "too_long" and "timeline limit of 30 s" in r.json()["detail"]
    r = client.post("/timeline", files={"audio": ("a.wav", wav_bytes(tone(200, 1.0)), "audio/wav")}, data={"mode": "spiral"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request" and "mode" in r.json()["detail"]
    silence = client.post("/timeline", files={"audio": ("quiet.wav", wav_bytes(np.zeros(32_000, np.float32)), "audio/wav")})
    assert silence.status_code == 200 and silence.json()["segments"] == []


def test_labels_say_what_the_page_needs(client, text_recognizer_dir):
    info = client.get("/labels").json()
    assert info["name"] == "tiny-wav2vec2-base" and info["timeline"] is True and info["max_timeline_seconds"] == 30
    with TestClient(create_app(Recognizer.load(text_recognizer_dir), ServeConfig())) as text_client:
        info = text_client.get("/labels").json()
        assert info["needs_text"] is True and info["asr"] is None and info["timeline"] is False
        assert "/timeline" not in text_client.get("/openapi.json").json()["paths"]  # no audio, no timeline
        assert text_client.get("/").status_code == 200


def test_exclusive_jobs_run_alone_between_batches(audio_rec):
    worker = InferenceQueue(audio_rec, max_queue=8, max_batch=8, batch_wait=0.0)
    seen: list[int] = []

    async def scenario():
        clips = [asyncio.ensure_future(worker.submit(tone(515, 0.6), None)) for _ in range(2)]
        job = asyncio.ensure_future(worker.run_exclusive(lambda: seen.append(worker.batches) or "done"))
        later = asyncio.ensure_future(worker.submit(tone(185, 0.6), None))
        failing = asyncio.ensure_future(worker.run_exclusive(lambda: 1 / 0))
        await asyncio.sleep(0)
        worker.start()
        try:
            return await asyncio.gather(*clips, job, later, failing, return_exceptions=True)
        finally:
            worker.stop()

    a, b, job, later, failing = asyncio.run(scenario())
    assert a.label == b.label == "high" and later.label == "low" and job == "done"
    assert isinstance(failing, ZeroDivisionError)
    assert seen == [1]  # the two clips before the job ran as one batch, the job alone, then the rest
    assert worker.batches == 2 and worker.served == 5


# --- emovox demo ----------------------------------------------------------------------------------


def test_demo_command_serves_and_opens_the_page(audio_recognizer_dir, tmp_path):
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.py"
    browser.write_text(f"import sys\nopen({str(opened)!r}, 'w').write(sys.argv[1])\n")
    env = dict(os.environ, BROWSER=f"{sys.executable} {browser} %s")
    cmd = [sys.executable, "-c", "from emovox.cli import main; main()", "demo", str(audio_recognizer_dir), "--threads", "1"]
    log = (tmp_path / "demo.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        # waits for the page however slow the machine is; a hang ends at the suite's per-test timeout
        while not (opened.is_file() and opened.read_text()):
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()
            time.sleep(0.1)
        url = opened.read_text()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        page = httpx.get(url)
        assert page.status_code == 200 and "static/demo/demo.js" in page.text
        assert httpx.get(url + "labels").json()["labels"] == ["high", "low"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    assert f"emovox demo: {url}" in (tmp_path / "demo.log").read_text()
