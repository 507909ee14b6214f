"""An HTTP service around one ``Recognizer`` (FastAPI; run it with ``emovox serve``).

Endpoints: ``POST /predict`` (multipart: an ``audio`` upload and/or a ``text`` transcript),
``POST /timeline`` (a long recording in ``audio``: a label per segment), ``GET /health``,
``GET /labels``, the demo page at ``/`` (``emovox.serve.web``), and the OpenAPI schema at
``/openapi.json`` with Swagger UI at ``/docs``, whose scripts and styles are served from the
installed ``fastapi-offline`` package, so that the docs work on a machine without internet.

Design choices a deployment depends on:

- Clients send audio, never paths: no request can make the server open a file of its choosing.
- Limits come first. A body larger than ``max_upload_bytes`` is refused with 413 (from its
  ``Content-Length`` before anything is read, or as soon as a streamed body passes the limit);
  a recording longer than ``max_seconds`` is refused with 422 from its header, before decoding.
  Every error is JSON: ``{"error": CODE, "detail": MESSAGE}``.
- Inference never runs on the event loop. Requests are decoded in the thread pool and queued
  (at most ``max_queue`` waiting; beyond that 503 with ``Retry-After``) for one inference
  thread, which takes up to ``max_batch`` waiting requests at a time and runs them as one
  batch. ``/health`` and ``/labels`` therefore answer at once while a prediction runs, and a
  burst of clients is served in batches instead of piling up model calls that fight over two cores.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint signatures at run
# time, and their types (UploadFile, the response models) are local to ``create_app``.
import asyncio
import os
import queue
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException as StarletteHTTPException

from emovox.audio import SAMPLE_RATE
from emovox.errors import EmovoxError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from emovox.inference.recognizer import Recognizer


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


class Busy(Exception):
    """The queue of waiting requests is full."""


@dataclass
class _Job:
    """Work that needs the model to itself (a whole timeline), run on the inference thread between batches."""

    fn: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class InferenceQueue:
    """One inference thread fed by a bounded queue; requests that wait together run as a batch."""

    def __init__(self, recognizer: "Recognizer", *, max_queue: int, max_batch: int, batch_wait: float):
        self.recognizer = recognizer
        self.max_batch = max_batch
        self.batch_wait = batch_wait
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self.busy = False
        self.served = 0
        self.batches = 0

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="emovox-inference", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)  # blocks only while the queue is full, i.e. until the thread takes one
            self._thread.join(timeout=30)
            self._thread = None

    async def submit(self, clip, text: str | None, context: str | None = None):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            self._queue.put_nowait((clip, text, context, future, loop))
        except queue.Full:
            raise Busy from None
        return await future

    async def run_exclusive(self, fn):
        """Run ``fn()`` on the inference thread, alone (no other batch meanwhile); its result or exception."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            self._queue.put_nowait(_Job(fn, future, loop))
        except queue.Full:
            raise Busy from None
        return await future

    def _run(self) -> None:
        pending = None  # a job met while a batch was being gathered runs right after that batch
        while True:
            first, pending = (pending if pending is not None else self._queue.get()), None
            if first is None:
                return
            if isinstance(first, _Job):
                self._run_job(first)
                continue
            batch = [first]
            deadline = time.monotonic() + self.batch_wait
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if isinstance(item, _Job):
                    pending = item
                    break
                batch.append(item)
            self.busy = True
            try:
                self._predict(batch)
            finally:
                self.busy = False
            if stop:
                return

    def _run_job(self, job: _Job) -> None:
        self.busy = True
        try:
            result = job.fn()
        except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
            result = exc
        finally:
            self.busy = False
        self.served += 1
        job.loop.call_soon_threadsafe(_settle, job.future, result)

    def _predict(self, batch: list) -> None:
        import warnings

        from emovox.errors import UngroupedWarning

        with warnings.catch_warnings():
            # each request is its own clip: a recognizer that normalises per speaker answers with its unnormalised
            # head, which the service says once at start-up (``create_app``), not once per batch
            warnings.simplefilter("ignore", UngroupedWarning)
            self._predict_batch(batch)

    def _predict_batch(self, batch: list) -> None:
        rec = self.recognizer
        contexts = [b[2] for b in batch]
        context = contexts if any(c is not None for c in contexts) else None  # only context recognizers get one
        try:
            results: list[Any] = rec.predict([b[0] for b in batch], text=[b[1] for b in batch], context=context)
        except Exception:  # one bad request must not fail its batch-mates: redo them one by one
            results = []
            for clip, text, ctx, _, _ in batch:
                try:
                    results.append(rec.predict([clip], text=[text], context=None if ctx is None else [ctx])[0])
                except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
                    results.append(exc)
        self.batches += 1
        self.served += len(batch)
        for (_, _, _, future, loop), result in zip(batch, results, strict=True):
            loop.call_soon_threadsafe(_settle, future, result)


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():  # the client went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


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
        import json

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


_STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    422: "invalid_request",
    503: "busy",
}


def create_app(recognizer: "Recognizer", config: ServeConfig = ServeConfig()) -> "FastAPI":
    """The FastAPI application serving ``recognizer`` within ``config``'s limits."""
    from contextlib import asynccontextmanager
    from typing import Literal

    from fastapi import File, Form, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi_offline import FastAPIOffline
    from pydantic import BaseModel, Field
    from starlette.concurrency import run_in_threadpool

    from emovox.audio import MIN_SECONDS, too_short_message
    from emovox.version import __version__

    worker = InferenceQueue(recognizer, max_queue=config.max_queue, max_batch=config.max_batch, batch_wait=config.batch_wait)
    labels = list(recognizer.labels)
    asr = recognizer.asr if recognizer.needs_text else None
    engine = str(getattr(recognizer, "engine", "torch"))

    class ErrorResponse(BaseModel):
        error: str = Field(description="Machine-readable error code.")
        detail: str = Field(description="What went wrong and what to do about it.")

    class PredictResponse(BaseModel):
        label: str = Field(description="The most probable label.")
        probabilities: dict[str, float] = Field(description="Probability of every label (they sum to 1).")
        transcript: str | None = Field(None, description="What the text model read: the given text, or the ASR transcript.")
        duration: float | None = Field(None, description="Seconds of audio received (the model uses at most its max_seconds).")
        speech: bool | None = Field(
            None, description="False when the audio holds no speech (silence, hum, steady noise): the label then means nothing."
        )

    class SegmentResponse(BaseModel):
        start: float = Field(description="Start of the segment in the recording (seconds).")
        end: float = Field(description="End of the segment (seconds).")
        label: str
        probabilities: dict[str, float]
        transcript: str | None = None

    class TimelineResponse(BaseModel):
        source: str = Field(description="The uploaded file's name.")
        duration: float = Field(description="Seconds of audio received.")
        labels: list[str]
        segmentation: dict[str, Any] = Field(description="How the recording was cut (mode and its settings).")
        label_seconds: dict[str, float] = Field(description="Seconds of the recording given to each label.")
        segments: list[SegmentResponse] = Field(description="In time order; empty when no speech was found.")

    class HealthResponse(BaseModel):
        status: str
        engine: str = Field(description="What computes the predictions: torch, onnx or onnx-int8 (the recognizer's runtime).")
        waiting: int = Field(description="Requests queued for inference.")
        busy: bool = Field(description="True while a batch is being predicted.")
        served: int

    class LabelsResponse(BaseModel):
        name: str = Field(description="The recognizer's name (its recipe).")
        engine: str = Field(description="What computes the predictions: torch, onnx or onnx-int8 (the recognizer's runtime).")
        labels: list[str]
        modality: str
        needs_text: bool = Field(description="The model reads transcripts (send text, or audio to be transcribed).")
        asr: str | None = Field(description="Whisper model that transcribes audio for text recognizers, if any.")
        max_upload_bytes: int
        max_seconds: float
        model_max_seconds: float = Field(description="Longer audio is cropped to this many seconds, as in training.")
        timeline: bool = Field(description="POST /timeline is available (the model can take audio).")
        max_timeline_seconds: float = Field(description="Longest recording POST /timeline accepts.")

    @asynccontextmanager
    async def lifespan(_app):
        worker.start()
        try:
            yield
        finally:
            await run_in_threadpool(worker.stop)

    takes_audio = not recognizer.needs_text or asr is not None or recognizer.needs_audio
    app = FastAPIOffline(
        title="emovox",
        version=__version__,
        description=(
            f"Speech emotion recognition: {recognizer.info.get('name', 'recognizer')} ({recognizer.modality}), "
            f"labels {', '.join(labels)}.\n\n"
            + (
                "Upload audio as `multipart/form-data` in the form field **`audio`**"
                if takes_audio
                else "Send the transcript as `multipart/form-data` or a URL-encoded form in the field **`text`**"
            )
            + (" (and/or a transcript in the field **`text`**)" if takes_audio and recognizer.needs_text else "")
            + ". Every error is JSON `{\"error\": CODE, \"detail\": MESSAGE}`; the page at `/` is a demo of this API."
        ),
        lifespan=lifespan,
        redoc_url=None,  # ReDoc would fetch web fonts; Swagger UI at /docs is self-hosted
        static_url="/static/docs",
        # Swagger UI would send the schema to an online validator for its badge; nothing leaves the machine
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.worker = worker

    def error(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "request"
            parts.append(f"{where}: {e.get('msg')}")
        return error(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, exc: StarletteHTTPException):
        return error(exc.status_code, _STATUS_CODES.get(exc.status_code, "error"), str(exc.detail), getattr(exc, "headers", None))

    errors = {
        400: {
            "model": ErrorResponse,
            "description": "The body is not a readable form (malformed or truncated multipart/form-data).",
        },
        413: {"model": ErrorResponse, "description": "The upload is larger than the server's limit."},
        422: {"model": ErrorResponse, "description": "Not audio, too long or too short, or text the model cannot use."},
        503: {"model": ErrorResponse, "description": "Too many requests waiting; retry after the Retry-After seconds."},
    }

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        """Liveness and load; answers while predictions run."""
        return HealthResponse(status="ok", engine=engine, waiting=worker.waiting, busy=worker.busy, served=worker.served)

    @app.get("/labels", response_model=LabelsResponse)
    async def get_labels() -> LabelsResponse:
        """The label set and what the model needs as input."""
        return LabelsResponse(
            name=str(recognizer.info.get("name") or "recognizer"),
            engine=engine,
            labels=labels,
            modality=recognizer.modality,
            needs_text=recognizer.needs_text,
            asr=asr.model if asr else None,
            max_upload_bytes=config.max_upload_bytes,
            max_seconds=config.max_seconds,
            model_max_seconds=recognizer.max_seconds,
            timeline=takes_audio,
            max_timeline_seconds=config.max_timeline_seconds,
        )

    async def handle(audio, text: str | None, context: str | None = None):
        if text is not None and not text.strip():
            text = None
        if context is not None and not context.strip():
            context = None  # an empty previous utterance: the dialogue's first
        if audio is None and text is None:
            if recognizer.needs_text:
                return error(
                    422, "invalid_request", "send an audio file (form field 'audio') and/or a transcript (form field 'text')"
                )
            return error(422, "invalid_request", "send an audio file in the form field 'audio'")
        clip, duration = None, None
        if audio is not None and (text is None or recognizer.needs_audio):  # audio+text models read both
            try:
                clip, duration = await run_in_threadpool(_decode_upload, audio, config.max_seconds)
            except _TooLong as exc:
                return error(422, "too_long", str(exc))
            except EmovoxError as exc:
                return error(422, "bad_audio", str(exc))
            if len(clip) < round(MIN_SECONDS * SAMPLE_RATE):
                name = os.path.basename(audio.filename or "upload") or "upload"
                return error(422, "too_short", too_short_message(name, len(clip)))
        try:
            pred = await worker.submit(clip, text, context)
        except Busy:
            return error(503, "busy", f"{config.max_queue} requests are already waiting; retry shortly", {"Retry-After": "1"})
        except EmovoxError as exc:
            return error(422, "invalid_request", str(exc))
        return PredictResponse(
            label=pred.label, probabilities=pred.probabilities, transcript=pred.transcript, duration=duration, speech=pred.speech
        )

    # The form fields depend on what the model reads, so that the schema says exactly what is accepted.
    audio_help = "An audio file (WAV, FLAC, OGG, MP3, ...), any sample rate and channel count, in the form field 'audio'."
    asr_note = " Transcribed by the ASR model unless 'text' is given."
    summary = "Label and class probabilities of one uploaded clip"
    speaker_turns = " each as 'speaker: text'"
    context_help = (
        "The previous utterance's transcript in the same dialogue (this recognizer has a context branch); "
        "leave it out for a dialogue's first utterance."
    )
    fmt = recognizer.model.context_format() if "context_text" in recognizer.fields else None
    if fmt is not None and (fmt.turns > 1 or fmt.speakers):
        context_help += (
            f" This recognizer was trained on the last {fmt.turns} turn(s){speaker_turns if fmt.speakers else ''}, "
            "oldest first, joined by spaces (Recognizer.context_text formats them)."
        )
    if not recognizer.needs_text:

        @app.post("/predict", response_model=PredictResponse, responses=errors, summary=summary)
        async def predict_audio(audio: UploadFile = File(..., description=audio_help)):
            return await handle(audio, None)

    elif asr is None and not recognizer.needs_audio:
        if "context_text" in recognizer.fields:

            async def predict_text(
                text: str = Form(
                    ..., description="The transcript to classify.", min_length=1, max_length=config.max_text_chars,
                    pattern=r"\S",
                ),
                context: str | None = Form(None, description=context_help, max_length=config.max_text_chars),
            ):
                return await handle(None, text, context)

        else:

            async def predict_text(
                text: str = Form(
                    ..., description="The transcript to classify.", min_length=1, max_length=config.max_text_chars,
                    pattern=r"\S",
                ),
            ):
                return await handle(None, text)

        app.post(
            "/predict", response_model=PredictResponse, responses=errors, summary="Label and class probabilities of a transcript"
        )(predict_text)

    else:
        speech_help = audio_help + (asr_note if asr is not None else "")
        if "context_text" in recognizer.fields:

            async def predict_speech(
                audio: UploadFile | None = File(None, description=speech_help),
                text: str | None = Form(None, description="The transcript (skips the ASR).", max_length=config.max_text_chars),
                context: str | None = Form(None, description=context_help, max_length=config.max_text_chars),
            ):
                return await handle(audio, text, context)

        else:

            async def predict_speech(
                audio: UploadFile | None = File(None, description=speech_help),
                text: str | None = Form(None, description="The transcript (skips the ASR).", max_length=config.max_text_chars),
            ):
                return await handle(audio, text)

        app.post("/predict", response_model=PredictResponse, responses=errors, summary=summary + " or transcript")(
            predict_speech
        )

    if takes_audio:
        timeline_help = (
            f"A recording of up to {config.max_timeline_seconds:g} s (form field 'audio'), cut into segments while it is "
            "streamed; each segment is classified as /predict would."
        )

        @app.post("/timeline", response_model=TimelineResponse, responses=errors, summary="Emotion timeline of a long recording")
        async def timeline(
            audio: UploadFile = File(..., description=timeline_help),
            mode: Literal["vad", "fixed"] = Form(
                "vad", description="vad: voice activity segments; fixed: 4 s windows every 3 s."
            ),
        ):
            try:
                tmp, name = await run_in_threadpool(_spool_upload, audio)
            except EmovoxError as exc:
                return error(422, "bad_audio", str(exc))

            def job():
                from emovox.audio import audio_duration

                try:
                    seconds = audio_duration(tmp)
                    if seconds > config.max_timeline_seconds:
                        raise _TooLong(
                            f"{name}: {seconds:.1f} s of audio is longer than this server's timeline limit of "
                            f"{config.max_timeline_seconds:g} s"
                        )
                    from emovox.inference.segments import predict_timeline

                    return predict_timeline(recognizer, tmp, mode=mode)
                except EmovoxError as exc:
                    raise type(exc)(str(exc).replace(tmp, name)) from None
                finally:
                    os.unlink(tmp)

            try:
                result = await worker.run_exclusive(job)
            except Busy:
                os.unlink(tmp)  # the job that deletes it will not run
                return error(503, "busy", f"{config.max_queue} requests are already waiting; retry shortly", {"Retry-After": "1"})
            except _TooLong as exc:
                return error(422, "too_long", str(exc))
            except EmovoxError as exc:
                return error(422, "bad_audio", str(exc))
            data = result.to_dict()
            data["source"] = name
            return TimelineResponse(**data)

    from emovox.serve.web import add_demo_page

    add_demo_page(app)
    app.add_middleware(BodyLimit, limit=config.max_upload_bytes)
    return app


class _TooLong(EmovoxError):
    pass


_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


def _spool_upload(upload) -> tuple[str, str]:
    """Copy the upload to a private temporary file; (its path, the client's file name). The caller deletes it."""
    import shutil

    name = os.path.basename(upload.filename or "upload") or "upload"
    suffix = os.path.splitext(name)[1]
    fd, tmp = tempfile.mkstemp(prefix="emovox-upload-", suffix=suffix if _SAFE_SUFFIX.match(suffix) else "")
    try:
        with os.fdopen(fd, "wb") as out:
            upload.file.seek(0)
            shutil.copyfileobj(upload.file, out, 1 << 20)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp, name


def _decode_upload(upload, max_seconds: float):
    """Spool the upload to a private temporary file, check its duration, decode it to 16 kHz mono."""
    from emovox.audio import audio_duration, load_audio

    tmp, name = _spool_upload(upload)
    try:
        try:
            seconds = audio_duration(tmp)
            if seconds > max_seconds:
                raise _TooLong(f"{name}: {seconds:.1f} s of audio is longer than this server's limit of {max_seconds:g} s")
            clip = load_audio(tmp)
        except EmovoxError as exc:
            # the message names the temporary file; the client knows its upload by its own name
            raise type(exc)(str(exc).replace(tmp, name)) from None
        return clip, round(len(clip) / SAMPLE_RATE, 3)
    finally:
        os.unlink(tmp)


def serve(
    recognizer: "Recognizer",
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServeConfig = ServeConfig(),
    log_level: str = "info",
    on_started=None,
) -> None:
    """Run the service with uvicorn until interrupted.

    ``on_started(url)`` is called once the server accepts connections (``emovox demo`` opens the
    page then); with ``port=0`` the URL carries the port the system chose.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(recognizer, config), host=host, port=port, log_level=log_level))
    if on_started is not None:
        threading.Thread(target=_call_when_started, args=(server, host, on_started), name="emovox-started", daemon=True).start()
    server.run()


def _call_when_started(server, host: str, callback) -> None:
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    # a wildcard address is not one a browser can open; the loopback name also counts as a secure origin (microphone)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    callback(f"http://{shown}:{port}/")
