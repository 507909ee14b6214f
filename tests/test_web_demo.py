"""The demo page in a real headless Chromium (Debian's), driven by Playwright, against `emovox serve`.

Each test saves a screenshot under test-artifacts/web/ (git-ignored). Playwright never downloads
a browser here: it launches /usr/bin/chromium (`.ci/run` installs Debian's `chromium`).
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import REPO, running_server

CHROMIUM = Path(os.environ.get("EMOVOX_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO / "test-artifacts" / "web"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip install playwright) drives the browser")
if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set EMOVOX_CHROMIUM)", allow_module_level=True)

CLIP = "03a01Wa.wav"  # EmoDB: speaker 03, sentence a01, anger (W)


@pytest.fixture(scope="module")
def pw():
    with playwright_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def chromium(pw):
    """One Chromium for the module's tests; each test gets a fresh context (its own cookies, storage, cache)."""
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@contextmanager
def browser_page(browser, viewport=(900, 900)):
    """A page in a fresh context of ``browser``; yields (page, requests seen)."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    try:
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        yield page, requests
    finally:
        context.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


# Waits go through locators: the page's Content-Security-Policy forbids the eval that
# wait_for_function would need (and the tests run the page with its CSP, as users do).


def open_demo(page, base: str) -> None:
    page.goto(base + "/")
    page.locator("#model", has_text="recognizer").wait_for(timeout=30_000)


def recognize(page, path: Path | None = None) -> None:
    if path is not None:
        page.set_input_files("#file", str(path))
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden]), #error:not([hidden])", timeout=60_000)
    playwright_api.expect(page.locator("#status")).to_have_text("", timeout=60_000)


def shown_bars(page) -> dict[str, tuple[str, float]]:
    """label -> (the percentage shown, the probability the bar holds)."""
    return {
        bar.get_attribute("data-label"): (bar.locator(".value").inner_text(), float(bar.get_attribute("data-probability")))
        for bar in page.locator("#bars .bar").all()
    }


def only_local(requests: list[str], base: str) -> None:
    outside = [u for u in requests if not u.startswith((base, "blob:", "data:"))]
    assert not outside, f"the page made requests off this server: {outside}"


def cli(*args: str) -> str:
    """What ``emovox ARGS`` prints on stdout (run in this process, as the CLI tests do)."""
    from typer.testing import CliRunner

    from emovox.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def server(audio_recognizer_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("web") / "server.log"
    with running_server(audio_recognizer_dir, "--threads", "1", "--max-timeline-seconds", "120", log=log) as base:
        yield base


def test_uploaded_emodb_clip_shows_what_predict_json_says(server, chromium, audio_recognizer_dir, emodb_dir):
    clip = emodb_dir / "wav" / CLIP
    expected = json.loads(cli("predict", str(audio_recognizer_dir), str(clip), "--json", "-"))[0]
    with browser_page(chromium) as (page, requests):
        open_demo(page, server)
        recognize(page, clip)
        shot = screenshot(page, "upload-emodb-clip.png")
        assert page.locator("#error").is_hidden()
        assert page.locator("#label").inner_text() == expected["label"]
        bars = shown_bars(page)
        assert list(bars) == list(expected["probabilities"])  # every class, in the recognizer's order
        for label, p in expected["probabilities"].items():
            text, held = bars[label]
            assert text == f"{100 * p:.2f}%", label
            assert held == pytest.approx(p, abs=1e-6), label
        width = page.locator(f'#bars .bar[data-label="{expected["label"]}"] .fill').evaluate("e => e.style.width")
        assert width == f"{100 * expected['probabilities'][expected['label']]:.2f}%"
        assert f"{sf.info(str(clip)).duration:.2f} s of audio" in page.locator("#result-meta").inner_text()
        only_local(requests, server)
    assert shot.stat().st_size > 10_000


def test_text_file_renamed_wav_shows_the_named_error(server, chromium, tmp_path):
    fake = tmp_path / "notes.wav"
    fake.write_text("These are my meeting notes, not a recording.\n")
    with browser_page(chromium) as (page, _):
        open_demo(page, server)
        recognize(page, fake)
        screenshot(page, "not-audio-error.png")
        assert page.locator("#result").is_hidden()
        assert page.locator("#error-code").inner_text() == "bad_audio"
        detail = page.locator("#error-detail").inner_text()
        assert detail.startswith("notes.wav: ") and "not an audio file" in detail
        body = page.locator("body").inner_text()
        for trace in ("Traceback", 'File "', "emovox-upload", "Internal Server Error", "/tmp/"):
            assert trace not in body


def test_long_recording_shows_the_timeline_of_emovox_timeline(server, chromium, audio_recognizer_dir, emodb_dir, tmp_path):
    parts = []
    for name in sorted(p.name for p in (emodb_dir / "wav").glob("*.wav"))[:8]:
        audio, sr = sf.read(str(emodb_dir / "wav" / name), dtype="float32")
        assert sr == 16_000
        parts += [audio, np.zeros(int(0.7 * sr), np.float32)]
    long = tmp_path / "eight-utterances.wav"
    sf.write(str(long), np.concatenate(parts), 16_000, subtype="PCM_16")
    out = tmp_path / "timeline.json"
    cli("timeline", str(audio_recognizer_dir), str(long), "--json", str(out))
    expected = json.loads(out.read_text())
    assert len(expected["segments"]) >= 4 and expected["duration"] > 10
    with browser_page(chromium) as (page, requests):
        open_demo(page, server)
        recognize(page, long)
        page.wait_for_selector("#timeline:not([hidden])", timeout=60_000)
        screenshot(page, "long-recording-timeline.png")
        rows = page.locator("#segments tbody tr").all()
        assert len(rows) == len(expected["segments"]) == page.locator("#strip .segment").count()
        for row, seg in zip(rows, expected["segments"], strict=False):
            cells = [c.inner_text() for c in row.locator("td").all()]
            assert cells[:4] == [f"{seg['start']:.2f}", f"{seg['end']:.2f}", seg["label"], f"{seg['probabilities'][seg['label']]:.3f}"]
        assert "(first 10 s)" in page.locator("#result-scope").inner_text()
        assert any(u.endswith("/timeline") for u in requests)
        only_local(requests, server)


def test_microphone_recording_is_uploaded_as_16khz_wav(server, pw, emodb_dir, tmp_path):
    """Chromium's fake microphone plays an EmoDB clip; the page records it, converts it to WAV, uploads it."""
    source = tmp_path / "mic.wav"  # Chromium's fake capture reads 16-bit PCM WAV; play the clip at 48 kHz stereo
    audio, _ = sf.read(str(emodb_dir / "wav" / CLIP), dtype="float32")
    up = np.repeat(audio, 3)
    sf.write(str(source), np.stack([up, up], axis=1), 48_000, subtype="PCM_16")
    fake_mic = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={source}"]
    uploads: list[bytes] = []
    # a Chromium of its own: the fake microphone is a command-line switch
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *fake_mic])
    try:
        with browser_page(browser) as (page, requests):

            def keep(route):  # what the browser sends, before the server sees it
                uploads.append(route.request.post_data_buffer)
                route.continue_()

            page.route("**/predict", keep)
            open_demo(page, server)
            page.click("#record")
            playwright_api.expect(page.locator("#rec-status")).to_contain_text("recording", timeout=30_000)
            page.wait_for_timeout(2_000)
            page.click("#record")
            playwright_api.expect(page.locator("#chosen")).to_contain_text("16 kHz WAV", timeout=30_000)
            recognize(page)
            screenshot(page, "microphone-recording.png")
            assert page.locator("#error").is_hidden() and page.locator("#label").inner_text() in ("high", "low")
            only_local(requests, server)
    finally:
        browser.close()
    assert len(uploads) == 1
    wav = _multipart_file(uploads[0], "audio")
    info = sf.info(io.BytesIO(wav))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (16_000, 1, "PCM_16", "WAV")
    assert 1.0 < info.duration < 5.0
    assert np.abs(sf.read(io.BytesIO(wav))[0]).max() > 0.01  # it recorded sound, not silence


def test_docs_render_offline_in_the_browser(server, chromium):
    with browser_page(chromium, viewport=(1000, 900)) as (page, requests):
        page.goto(server + "/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert {"/predict", "/timeline", "/labels", "/health"} <= {p.strip() for p in paths}
        screenshot(page, "docs-offline.png")
        only_local(requests, server)


def test_text_recognizer_page_takes_a_transcript(text_recognizer_dir, chromium, tmp_path):
    from emovox.inference.recognizer import Recognizer

    text = "I feel sad and tired"
    expected = Recognizer.load(text_recognizer_dir).predict(text=text)
    server_log = tmp_path / "server.log"
    with running_server(text_recognizer_dir, "--threads", "1", log=server_log) as base, browser_page(chromium) as (page, _):
        open_demo(page, base)
        assert page.locator("#text-input").is_visible() and page.locator("#audio-input").is_hidden()
        assert "text only" in page.locator("#text-hint").inner_text()
        assert page.locator("#submit").is_disabled()
        page.fill("#text", text)
        recognize(page)
        screenshot(page, "text-recognizer.png")
        assert page.locator("#label").inner_text() == expected.label
        assert page.locator("#transcript").inner_text() == f"“{text}”"
        for label, (_, held) in shown_bars(page).items():
            assert held == pytest.approx(expected.probabilities[label], abs=1e-6)


def _multipart_file(body: bytes, field: str) -> bytes:
    """The bytes of one file field of a multipart/form-data body (as the browser sent it)."""
    boundary = body.split(b"\r\n", 1)[0][2:]
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n\r\n" + body
    )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == field:
            return part.get_payload(decode=True)
    raise AssertionError(f"no {field!r} field in the upload")


def test_artifacts_folder_is_ignored_by_git():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    run = subprocess.run(["git", "check-ignore", "-q", str(ARTIFACTS / "x.png")], cwd=REPO, check=False)
    assert run.returncode == 0, "test-artifacts/ must be git-ignored"
