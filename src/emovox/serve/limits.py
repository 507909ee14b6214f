"""What the service accepts: its limits (``ServeConfig``), checked before any work is done.

A body larger than ``max_upload_bytes`` is refused with 413 by ``BodyLimit`` (from its ``Content-Length`` before
anything is read, or as soon as a streamed body passes the limit); a recording longer than ``max_seconds`` is refused
from its header, before decoding (``decode_upload``). Clients send audio, never paths: an upload is copied to a
private temporary file, and error messages name the client's file, never that temporary one.
"""

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass

from starlette.exceptions import HTTPException as StarletteHTTPException

from emovox.audio import SAMPLE_RATE
from emovox.errors import EmovoxError


@dataclass(frozen=True)
class ServeConfig:
    max_upload_bytes: int = 25 * 1024 * 1024
    max_seconds: float = 60.0
    max_queue: int = 32
    max_batch: int = 8
    #: how long the inference thread waits for more requests to join a batch (seconds)
    batch_wait: float = 0.005
    max_text_chars: int = 5000
    #: ``/timeline`` streams the recording segment by segment, so it may take longer audio than ``/predict``
    max_timeline_seconds: float = 600.0

    def __post_init__(self) -> None:
        limits = (self.max_upload_bytes, self.max_seconds, self.max_queue, self.max_batch, self.max_timeline_seconds)
        if min(limits) <= 0:
            raise EmovoxError("serve limits (upload size, seconds, timeline seconds, queue, batch) must all be positive")
        if self.batch_wait < 0:
            raise EmovoxError("batch_wait must not be negative")


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` mid-body; an HTTPException, so FastAPI's body parsing passes it on
    (anything else becomes a 400 "error parsing the body") to the JSON error handler."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes")


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``limit`` bytes, by header or while streaming."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge(self.limit)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = json.dumps(
            {"error": "too_large", "detail": f"the request body is larger than the limit of {self.limit} bytes"}
        ).encode()
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")
            ],
        })
        await send({"type": "http.response.body", "body": body})


class TooLong(EmovoxError):
    """A recording longer than the server accepts (422 ``too_long``)."""


SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


def spool_upload(upload) -> tuple[str, str]:
    """Copy the upload to a private temporary file; (its path, the client's file name). The caller deletes it."""
    name = os.path.basename(upload.filename or "upload") or "upload"
    suffix = os.path.splitext(name)[1]
    fd, tmp = tempfile.mkstemp(prefix="emovox-upload-", suffix=suffix if SAFE_SUFFIX.match(suffix) else "")
    try:
        with os.fdopen(fd, "wb") as out:
            upload.file.seek(0)
            shutil.copyfileobj(upload.file, out, 1 << 20)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp, name


def decode_upload(upload, max_seconds: float):
    """Spool the upload to a private temporary file, check its duration, decode it to 16 kHz mono."""
    from emovox.audio import audio_duration, load_audio  # looked up at call time (tests count the decodes)

    tmp, name = spool_upload(upload)
    try:
        try:
            seconds = audio_duration(tmp)
            if seconds > max_seconds:
                raise TooLong(f"{name}: {seconds:.1f} s of audio is longer than this server's limit of {max_seconds:g} s")
            clip = load_audio(tmp)
        except EmovoxError as exc:
            # the message names the temporary file; the client knows its upload by its own name
            raise type(exc)(str(exc).replace(tmp, name)) from None
        return clip, round(len(clip) / SAMPLE_RATE, 3)
    finally:
        os.unlink(tmp)
