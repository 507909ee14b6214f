"""The HTTP service: a real uvicorn process on 127.0.0.1, httpx clients, and schemathesis on its schema."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import soundfile as sf
from helpers import free_port, running_server, tone

from emovox.inference.recognizer import Recognizer
from emovox.serve.app import create_app
from emovox.serve.limits import ServeConfig
from emovox.serve.queue import Busy, InferenceQueue


def wav_bytes(samples: np.ndarray, sr: int = 16_000, *, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format=fmt, subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(audio_recognizer_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with running_server(
        audio_recognizer_dir, "--max-upload-mb", "0.5", "--max-seconds", "12", "--max-batch", "4", "--threads", "1", log=log
    ) as base:
        yield base


# --- endpoints --------------------------------------------------------------------------------


def test_health_labels_and_schema(server):
    h = httpx.get(f"{server}/health").json()
    assert h["status"] == "ok" and h["waiting"] == 0
    labels = httpx.get(f"{server}/labels").json()
    assert labels["labels"] == ["high", "low"] and labels["modality"] == "audio" and labels["needs_text"] is False
    assert labels["max_upload_bytes"] == 512 * 1024 and labels["max_seconds"] == 12 and labels["model_max_seconds"] == 10
    schema = httpx.get(f"{server}/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body
    assert {"413", "422", "503"} <= set(schema["paths"]["/predict"]["post"]["responses"])


def test_predict_uploads(server):
    r = httpx.post(f"{server}/predict", files={"audio": ("high.wav", wav_bytes(tone(515, 1.0)), "audio/wav")})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["label"] == "high" and sum(data["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert data["duration"] == pytest.approx(1.0) and data["transcript"] is None
    stereo = np.stack([tone(185, 1.5, sr=44_100), tone(185, 1.5, sr=44_100)], axis=1)
    r = httpx.post(f"{server}/predict", files={"audio": ("low.flac", wav_bytes(stereo, 44_100, fmt="FLAC"), "audio/flac")})
    assert r.status_code == 200 and r.json()["label"] == "low"
    assert r.json()["duration"] == pytest.approx(1.5, abs=1e-3)


@pytest.mark.parametrize(
    "files, data, status, code, message",
    [
        ({"audio": ("notes.wav", b"definitely not audio", "audio/wav")}, None, 422, "bad_audio", "notes.wav"),
        ({"audio": ("long.wav", wav_bytes(tone(200, 13.0, sr=8000), 8000), "audio/wav")}, None, 422, "too_long", "limit of 12 s"),
        ({"audio": ("blip.wav", wav_bytes(tone(200, 0.005)), "audio/wav")}, None, 422, "too_short", "too short"),
        (None, {"text": "hello"}, 422, "invalid_request", "audio: Field required"),
        ({"audio": ("big.wav", wav_bytes(tone(200, 20.0)), "audio/wav")}, None, 413, "too_large", "larger than the limit"),
    ],
)
def test_limits_and_bad_requests_are_json_errors(server, files, data, status, code, message):
    r = httpx.post(f"{server}/predict", files=files, data=data)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and message in body["detail"]
    assert "emovox-upload" not in body["detail"]  # server-side temporary paths never leak


def test_streamed_body_over_the_limit_is_refused_while_streaming(server):
    boundary = "emovoxboundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="s.wav"\r\n'
            'Content-Type: audio/wav\r\n\r\n').encode()
    payload = head + wav_bytes(tone(200, 20.0)) + f"\r\n--{boundary}--\r\n".encode()

    def chunks():  # no Content-Length: the server must count what arrives
        for i in range(0, len(payload), 32 * 1024):
            yield payload[i : i + 32 * 1024]

    r = httpx.post(f"{server}/predict", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"


@contextmanager
def app_server(app):
    """``app`` under a real uvicorn server in a thread of this process (so a test can reach into its recognizer)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:  # start-up, not a measurement: pytest-timeout ends a hang
            if not thread.is_alive():
                raise RuntimeError("uvicorn stopped before it started serving")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


def test_health_answers_while_a_prediction_is_in_flight(audio_recognizer_dir):
    """The inference thread is held inside a prediction until /health has answered: no timing involved.

    If inference ran on the event loop (or held a lock /health needs), /health could not answer and
    the held prediction would never be released: the test then fails on the client's timeout.
    """
    rec = Recognizer.load(audio_recognizer_dir)
    inside, release = threading.Event(), threading.Event()
    predict = rec.predict

    def held_predict(*args, **kwargs):
        inside.set()
        release.wait()
        return predict(*args, **kwargs)

    rec.predict = held_predict
    upload = {"audio": ("high.wav", wav_bytes(tone(515, 1.0)), "audio/wav")}
    with app_server(create_app(rec, ServeConfig())) as base, ThreadPoolExecutor(16) as pool:
        pending = pool.submit(httpx.post, f"{base}/predict", files=upload, timeout=120)
        try:
            assert inside.wait(timeout=120), "the prediction never reached the recognizer"
            h = httpx.get(f"{base}/health", timeout=60)
            assert h.status_code == 200 and h.json()["busy"] is True and h.json()["served"] == 0
            assert not pending.done()  # /health answered while the prediction was still in flight
        finally:
            release.set()
        r = pending.result()
        assert r.status_code == 200 and r.json()["label"] == "high"
        # then a burst of clients: every one is served (in batches), as the recognizer answers in process
        bodies = [wav_bytes(tone(515 if i % 2 else 185, 1.0 + 0.05 * i)) for i in range(16)]
        burst = [pool.submit(httpx.post, f"{base}/predict", files={"audio": ("x.wav", w, "audio/wav")}, timeout=120)
                 for w in bodies]
        answers = [f.result() for f in burst]
        assert [a.status_code for a in answers] == [200] * 16
        decoded = [sf.read(io.BytesIO(w), dtype="float32")[0] for w in bodies]
        assert [a.json()["label"] for a in answers] == [p.label for p in predict(decoded)]
        h = httpx.get(f"{base}/health").json()
        assert (h["served"], h["waiting"]) == (17, 0)


# --- queue and batching, in process ----------------------------------------------------------


def test_queue_is_bounded_and_waiting_requests_run_as_one_batch(audio_recognizer_dir):
    rec = Recognizer.load(audio_recognizer_dir)
    worker = InferenceQueue(rec, max_queue=3, max_batch=8, batch_wait=0.0)

    async def scenario():
        clips = [tone(515, 0.6), tone(185, 0.6), tone(515, 0.9)]
        pending = [asyncio.ensure_future(worker.submit(c, None)) for c in clips]
        await asyncio.sleep(0)  # all three are queued; the worker is not running yet
        with pytest.raises(Busy):
            await worker.submit(tone(185, 0.6), None)
        worker.start()
        try:
            return await asyncio.gather(*pending)
        finally:
            worker.stop()

    preds = asyncio.run(scenario())
    assert [p.label for p in preds] == ["high", "low", "high"]
    assert worker.batches == 1 and worker.served == 3
    assert preds[1].probabilities == pytest.approx(rec.predict(tone(185, 0.6)).probabilities, abs=1e-5)


def test_a_bad_request_does_not_fail_its_batch_mates(audio_recognizer_dir):
    rec = Recognizer.load(audio_recognizer_dir)
    worker = InferenceQueue(rec, max_queue=4, max_batch=4, batch_wait=0.0)

    async def scenario():
        futures = [asyncio.ensure_future(worker.submit(c, None)) for c in (tone(515, 0.6), np.zeros(10, np.float32))]
        await asyncio.sleep(0)
        worker.start()
        try:
            return await asyncio.gather(*futures, return_exceptions=True)
        finally:
            worker.stop()

    good, bad = asyncio.run(scenario())
    assert good.label == "high"
    assert "shorter than the 0.1 s minimum" in str(bad)


def test_text_recognizer_over_http(text_recognizer_dir):
    from fastapi.testclient import TestClient

    rec = Recognizer.load(text_recognizer_dir)
    with TestClient(create_app(rec, ServeConfig())) as client:
        r = client.post("/predict", data={"text": "I feel sad and tired"})
        assert r.status_code == 200, r.text
        assert r.json()["transcript"] == "I feel sad and tired"
        assert r.json()["probabilities"] == pytest.approx(rec.predict(text="I feel sad and tired").probabilities, abs=1e-6)
        # without an ASR model the service takes transcripts only, and says so in its schema
        r = client.post("/predict", files={"audio": ("a.wav", wav_bytes(tone(200, 1.0)), "audio/wav")})
        assert r.status_code == 422 and "text: Field required" in r.json()["detail"]
        fields = client.get("/openapi.json").json()["components"]["schemas"]
        assert [set(v["properties"]) for k, v in fields.items() if k.startswith("Body_")] == [{"text"}]
        assert client.get("/labels").json()["needs_text"] is True


@pytest.mark.slow
def test_text_recognizer_with_asr_transcribes_uploads(text_recognizer_dir, whisper_base_dir, emodb_dir):
    from fastapi.testclient import TestClient

    from emovox.inference.asr import AsrConfig

    rec = Recognizer.load(text_recognizer_dir, asr=AsrConfig(str(whisper_base_dir), "de"))
    wav = emodb_dir / "wav" / "03a01Wa.wav"
    with TestClient(create_app(rec, ServeConfig())) as client:
        r = client.post("/predict", files={"audio": (wav.name, wav.read_bytes(), "audio/wav")})
        assert r.status_code == 200, r.text
        assert r.json()["transcript"] == "Der Lappen liegt auf dem Eisschrank!"
        assert r.json()["duration"] == pytest.approx(sf.info(str(wav)).duration, abs=1e-3)  # 1.878 s
        r = client.post("/predict", data={"text": "Das will sie am Mittwoch abgeben."})
        assert r.status_code == 200 and r.json()["transcript"] == "Das will sie am Mittwoch abgeben."
        fields = client.get("/openapi.json").json()["components"]["schemas"]
        bodies = {k: set(v["properties"]) for k, v in fields.items() if k.startswith("Body_")}
        assert {"audio", "text"} in bodies.values() and sorted(map(len, bodies.values())) == [2, 2]  # predict, timeline
        assert client.get("/labels").json()["asr"] == str(whisper_base_dir)


# --- schemathesis -----------------------------------------------------------------------------


def test_api_conforms_to_its_schema(server):
    """Generated requests for every operation: no server errors, responses as documented."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings  # installed with schemathesis

    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    calls = []

    @given(case=schema.as_strategy())
    @settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    def check(case):
        calls.append(case.operation.label)
        # Random bytes are schema-valid "binary" but not audio, so the service rightly refuses
        # most generated uploads with 422: that one check cannot apply to an audio endpoint.
        case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])

    check()
    assert {"GET /health", "GET /labels", "POST /predict"} <= set(calls)
