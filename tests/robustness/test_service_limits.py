"""The HTTP service under hostile or excessive input: limits on body size, audio duration and
concurrency hold before any work is done, and no request can make the server read a file of
its choosing. In-process (ASGI) against a real tiny recognizer; the wire-level behaviour of a
real uvicorn process is ``tests/test_serve.py``'s.
"""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
from helpers import tone, write_wav

from emovox.inference.recognizer import Recognizer
from emovox.serve.app import create_app
from emovox.serve.limits import ServeConfig


def wav_bytes(samples: np.ndarray, sr: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def recognizer(audio_recognizer_dir):
    return Recognizer.load(audio_recognizer_dir)


@pytest.fixture
def spool(tmp_path, monkeypatch):
    """Uploads are spooled here (the server's temporary directory), so leftovers can be seen."""
    d = tmp_path / "spool"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


async def _with_app(recognizer, config: ServeConfig, work):
    app = create_app(recognizer, config)
    app.state.worker.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emovox") as client:
            return await work(client, app)
    finally:
        app.state.worker.stop()


def serve(recognizer, config, work):
    return asyncio.run(_with_app(recognizer, config, work))


def test_a_body_over_the_limit_is_refused_before_anything_is_decoded(recognizer, spool, monkeypatch):
    import emovox.audio

    decoded = []
    monkeypatch.setattr(emovox.audio, "load_audio", lambda *a, **k: decoded.append(a) or np.zeros(16000, np.float32))
    big = wav_bytes(tone(300, 3.0))  # 96 kB

    async def work(client, app):
        r = await client.post("/predict", files={"audio": ("big.wav", big, "audio/wav")})
        return r, app.state.worker.served

    r, served = serve(recognizer, ServeConfig(max_upload_bytes=50_000), work)
    assert r.status_code == 413 and r.json()["error"] == "too_large" and "50000 bytes" in r.json()["detail"]
    assert decoded == [] and served == 0 and list(spool.iterdir()) == []


def test_audio_over_the_duration_limit_is_refused_from_its_header(recognizer, spool, monkeypatch):
    import emovox.audio

    decoded = []
    real = emovox.audio.load_audio
    monkeypatch.setattr(emovox.audio, "load_audio", lambda *a, **k: decoded.append(a) or real(*a, **k))

    async def work(client, app):
        long = await client.post("/predict", files={"audio": ("long.wav", wav_bytes(tone(300, 3.0)), "audio/wav")})
        ok = await client.post("/predict", files={"audio": ("ok.wav", wav_bytes(tone(180, 0.8)), "audio/wav")})
        return long, ok

    long, ok = serve(recognizer, ServeConfig(max_seconds=2.0), work)
    assert long.status_code == 422 and long.json()["error"] == "too_long"
    assert "long.wav: 3.0 s of audio is longer than this server's limit of 2 s" == long.json()["detail"]
    assert ok.status_code == 200 and len(decoded) == 1  # only the accepted clip was decoded
    assert list(spool.iterdir()) == []


def test_concurrency_is_bounded_by_the_queue_and_overflow_is_told_when_to_retry(recognizer, spool, monkeypatch):
    slow_predict = recognizer.predict

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return slow_predict(*args, **kwargs)

    monkeypatch.setattr(recognizer, "predict", slow)
    body = wav_bytes(tone(180, 0.6))

    async def work(client, app):
        async def one():
            return await client.post("/predict", files={"audio": ("a.wav", body, "audio/wav")})

        responses = await asyncio.gather(*(one() for _ in range(8)))
        health = await client.get("/health")
        return responses, app.state.worker.served, health

    responses, served, health = serve(recognizer, ServeConfig(max_queue=1, max_batch=1), work)
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes
    for r in responses:
        if r.status_code == 503:
            assert r.json()["error"] == "busy" and r.headers["retry-after"] == "1"
    assert served == codes.count(200)  # refused requests never reached the model
    assert health.status_code == 200 and health.json()["waiting"] == 0
    assert list(spool.iterdir()) == []


def test_requests_cannot_name_server_paths(recognizer, spool, tmp_path):
    """A path in a form field, a JSON body or an upload's file name is never opened."""
    server_file = write_wav(tmp_path / "secret" / "server.wav", tone(520, 0.8))  # a "high" clip on the server
    sent = tone(180, 0.8)  # the client's own "low" clip
    direct = recognizer.predict(str(write_wav(tmp_path / "client" / "mine.wav", sent))).probabilities
    server_direct = recognizer.predict(str(server_file)).probabilities
    assert direct != server_direct

    async def work(client, app):
        as_field = await client.post("/predict", data={"audio": str(server_file)})
        as_json = await client.post("/predict", json={"audio": str(server_file), "path": str(server_file)})
        as_name = await client.post("/predict", files={"audio": (str(server_file), wav_bytes(sent), "audio/wav")})
        traversal = await client.post(
            "/predict", files={"audio": ("../../../../etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", "audio/wav")}
        )
        return as_field, as_json, as_name, traversal

    as_field, as_json, as_name, traversal = serve(recognizer, ServeConfig(), work)
    assert as_field.status_code == 422 and as_json.status_code == 422
    # named after a server file, the upload is still just its own bytes
    assert as_name.status_code == 200
    assert as_name.json()["probabilities"] == pytest.approx(direct, abs=1e-6)
    # errors talk about the client's file by its base name, never about server paths
    assert traversal.status_code == 422 and traversal.json()["error"] == "bad_audio"
    detail = traversal.json()["detail"]
    assert detail.startswith("passwd: cannot be read as audio")
    for leak in (str(spool), "emovox-upload-", "/etc", str(tmp_path)):
        assert leak not in json.dumps([r.json() for r in (as_field, as_json, traversal)])
    assert list(spool.iterdir()) == []
