"""The demo page: a static HTML/JS/CSS page over the service's JSON API (``/labels``, ``/predict``, ``/timeline``).

Why a static page and not Gradio: the page needs four controls (a file, a recorder, a transcript,
a button) and three views (bars, a timeline strip, an error line), which fit in a few hundred
lines of plain JavaScript that ship inside the wheel: nothing to build, no CDN, no web fonts, no
analytics, no second web framework in the dependencies, and no second way to call the model. The
page is only a client of the documented API, so what it shows is exactly what any client gets,
and the browser tests check the API and the page at once. Its Content-Security-Policy allows
this origin only: no request can leave the machine.

Recording: the browser's ``MediaRecorder`` produces WebM/Opus in Chromium, which libsndfile
(soundfile) cannot decode. The page therefore decodes the recording with the Web Audio API,
mixes it to mono, resamples it to 16 kHz and uploads a 16-bit PCM WAV, so the server accepts
only the formats it documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

STATIC = Path(__file__).parent / "static"

#: The page and its assets may talk to this origin only (``blob:`` plays back the user's own recording).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)


def add_demo_page(app: FastAPI) -> None:
    """Serve the page at ``/`` and its script and style under ``/static/demo``."""
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def demo_page():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)

    app.mount("/static/demo", StaticFiles(directory=STATIC), name="demo")
