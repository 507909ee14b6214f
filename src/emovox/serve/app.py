"""The service's routes: ``create_app`` assembles them around one recognizer; ``serve`` runs it with uvicorn.

``POST /predict`` (an ``audio`` upload and/or a ``text`` transcript; the form says exactly what the recognizer
reads), ``POST /timeline`` (a long recording: a label per segment), ``GET /health`` and ``GET /labels`` (which answer
at once while a prediction runs), the demo page at ``/`` (``web/``), and the OpenAPI schema with Swagger UI at
``/docs``, whose scripts and styles come from the installed ``fastapi-offline`` package (no internet needed).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint signatures at run time.
import os
import threading
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

from starlette.exceptions import HTTPException as StarletteHTTPException

from emovox.audio import MIN_SECONDS, SAMPLE_RATE, too_short_message
from emovox.errors import EmovoxError
from emovox.serve.limits import BodyLimit, ServeConfig, TooLong, decode_upload, spool_upload
from emovox.serve.queue import Busy, InferenceQueue
from emovox.serve.schemas import (
    ERRORS,
    STATUS_CODES,
    HealthResponse,
    LabelsResponse,
    PredictResponse,
    TimelineResponse,
)
from emovox.version import __version__

if TYPE_CHECKING:
    from fastapi import FastAPI

    from emovox.inference.recognizer import Recognizer

AUDIO_HELP = "An audio file (WAV, FLAC, OGG, MP3, ...), any sample rate and channel count, in the form field 'audio'."
SUMMARY = "Label and class probabilities of one uploaded clip"


def create_app(recognizer: "Recognizer", config: ServeConfig = ServeConfig()) -> "FastAPI":
    """The FastAPI application serving ``recognizer`` within ``config``'s limits."""
    from fastapi_offline import FastAPIOffline
    from starlette.concurrency import run_in_threadpool

    from emovox.serve.web import add_demo_page

    worker = InferenceQueue(recognizer, max_queue=config.max_queue, max_batch=config.max_batch, batch_wait=config.batch_wait)

    @asynccontextmanager
    async def lifespan(_app):
        worker.start()
        try:
            yield
        finally:
            await run_in_threadpool(worker.stop)

    app = FastAPIOffline(
        title="emovox",
        version=__version__,
        description=describe(recognizer),
        lifespan=lifespan,
        redoc_url=None,  # ReDoc would fetch web fonts; Swagger UI at /docs is self-hosted
        static_url="/static/docs",
        # Swagger UI would send the schema to an online validator for its badge; nothing leaves the machine
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.worker = worker
    add_error_handlers(app)
    add_status_routes(app, recognizer, worker, config)
    add_predict_route(app, recognizer, worker, config)
    if takes_audio(recognizer):
        add_timeline_route(app, recognizer, worker, config)
    add_demo_page(app)
    app.add_middleware(BodyLimit, limit=config.max_upload_bytes)
    return app


def asr_of(recognizer: "Recognizer"):
    """The ASR model that transcribes audio for a text recognizer, or None."""
    return recognizer.asr if recognizer.needs_text else None


def takes_audio(recognizer: "Recognizer") -> bool:
    return not recognizer.needs_text or asr_of(recognizer) is not None or recognizer.needs_audio


def engine_of(recognizer: "Recognizer") -> str:
    return str(getattr(recognizer, "engine", "torch"))


def describe(recognizer: "Recognizer") -> str:
    """The OpenAPI description: what the recognizer is and which form fields it reads."""
    audio = takes_audio(recognizer)
    return (
        f"Speech emotion recognition: {recognizer.info.get('name', 'recognizer')} ({recognizer.modality}), "
        f"labels {', '.join(recognizer.labels)}.\n\n"
        + (
            "Upload audio as `multipart/form-data` in the form field **`audio`**"
            if audio
            else "Send the transcript as `multipart/form-data` or a URL-encoded form in the field **`text`**"
        )
        + (" (and/or a transcript in the field **`text`**)" if audio and recognizer.needs_text else "")
        + ". Every error is JSON `{\"error\": CODE, \"detail\": MESSAGE}`; the page at `/` is a demo of this API."
    )


def error(status: int, code: str, detail: str, headers: dict | None = None):
    """Every error the service returns: JSON ``{"error": CODE, "detail": MESSAGE}``."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def busy(config: ServeConfig):
    return error(503, "busy", f"{config.max_queue} requests are already waiting; retry shortly", {"Retry-After": "1"})


def add_error_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "request"
            parts.append(f"{where}: {e.get('msg')}")
        return error(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, exc: StarletteHTTPException):
        return error(exc.status_code, STATUS_CODES.get(exc.status_code, "error"), str(exc.detail), getattr(exc, "headers", None))


def add_status_routes(app, recognizer: "Recognizer", worker: InferenceQueue, config: ServeConfig) -> None:
    """``/health`` and ``/labels``: they never wait for the inference thread."""
    engine = engine_of(recognizer)
    asr = asr_of(recognizer)

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
            labels=list(recognizer.labels),
            modality=recognizer.modality,
            needs_text=recognizer.needs_text,
            asr=asr.model if asr else None,
            max_upload_bytes=config.max_upload_bytes,
            max_seconds=config.max_seconds,
            model_max_seconds=recognizer.max_seconds,
            timeline=takes_audio(recognizer),
            max_timeline_seconds=config.max_timeline_seconds,
        )


async def predict_one(recognizer: "Recognizer", worker: InferenceQueue, config: ServeConfig, audio, text, context=None):
    """One ``/predict`` request: check what was sent, decode the audio off the event loop, queue it, answer."""
    from starlette.concurrency import run_in_threadpool

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
            clip, duration = await run_in_threadpool(decode_upload, audio, config.max_seconds)
        except TooLong as exc:
            return error(422, "too_long", str(exc))
        except EmovoxError as exc:
            return error(422, "bad_audio", str(exc))
        if len(clip) < round(MIN_SECONDS * SAMPLE_RATE):
            name = os.path.basename(audio.filename or "upload") or "upload"
            return error(422, "too_short", too_short_message(name, len(clip)))
    try:
        pred = await worker.submit(clip, text, context)
    except Busy:
        return busy(config)
    except EmovoxError as exc:
        return error(422, "invalid_request", str(exc))
    return PredictResponse(
        label=pred.label, probabilities=pred.probabilities, transcript=pred.transcript, duration=duration, speech=pred.speech
    )


def context_help(recognizer: "Recognizer") -> str:
    text = (
        "The previous utterance's transcript in the same dialogue (this recognizer has a context branch); "
        "leave it out for a dialogue's first utterance."
    )
    fmt = recognizer.model.context_format() if "context_text" in recognizer.fields else None
    if fmt is not None and (fmt.turns > 1 or fmt.speakers):
        speaker_turns = " each as 'speaker: text'"
        text += (
            f" This recognizer was trained on the last {fmt.turns} turn(s){speaker_turns if fmt.speakers else ''}, "
            "oldest first, joined by spaces (Recognizer.context_text formats them)."
        )
    return text


def add_predict_route(app, recognizer: "Recognizer", worker: InferenceQueue, config: ServeConfig) -> None:
    """``POST /predict``, whose form fields are what the model reads, so that the schema says exactly what is accepted."""
    from fastapi import File, Form, UploadFile

    asr = asr_of(recognizer)
    has_context = "context_text" in recognizer.fields
    context_doc = context_help(recognizer)
    limit = config.max_text_chars

    if not recognizer.needs_text:

        @app.post("/predict", response_model=PredictResponse, responses=ERRORS, summary=SUMMARY)
        async def predict_audio(audio: UploadFile = File(..., description=AUDIO_HELP)):
            return await predict_one(recognizer, worker, config, audio, None)

    elif asr is None and not recognizer.needs_audio:
        if has_context:

            async def predict_text(
                text: str = Form(..., description="The transcript to classify.", min_length=1, max_length=limit, pattern=r"\S"),
                context: str | None = Form(None, description=context_doc, max_length=limit),
            ):
                return await predict_one(recognizer, worker, config, None, text, context)

        else:

            async def predict_text(
                text: str = Form(..., description="The transcript to classify.", min_length=1, max_length=limit, pattern=r"\S"),
            ):
                return await predict_one(recognizer, worker, config, None, text)

        app.post(
            "/predict", response_model=PredictResponse, responses=ERRORS, summary="Label and class probabilities of a transcript"
        )(predict_text)

    else:
        speech_help = AUDIO_HELP + (" Transcribed by the ASR model unless 'text' is given." if asr is not None else "")
        if has_context:

            async def predict_speech(
                audio: UploadFile | None = File(None, description=speech_help),
                text: str | None = Form(None, description="The transcript (skips the ASR).", max_length=limit),
                context: str | None = Form(None, description=context_doc, max_length=limit),
            ):
                return await predict_one(recognizer, worker, config, audio, text, context)

        else:

            async def predict_speech(
                audio: UploadFile | None = File(None, description=speech_help),
                text: str | None = Form(None, description="The transcript (skips the ASR).", max_length=limit),
            ):
                return await predict_one(recognizer, worker, config, audio, text)

        app.post("/predict", response_model=PredictResponse, responses=ERRORS, summary=SUMMARY + " or transcript")(
            predict_speech
        )


def add_timeline_route(app, recognizer: "Recognizer", worker: InferenceQueue, config: ServeConfig) -> None:
    """``POST /timeline``: a long recording, spooled to disk and segmented on the inference thread, alone."""
    from fastapi import File, Form, UploadFile
    from starlette.concurrency import run_in_threadpool

    timeline_help = (
        f"A recording of up to {config.max_timeline_seconds:g} s (form field 'audio'), cut into segments while it is "
        "streamed; each segment is classified as /predict would."
    )

    @app.post("/timeline", response_model=TimelineResponse, responses=ERRORS, summary="Emotion timeline of a long recording")
    async def timeline(
        audio: UploadFile = File(..., description=timeline_help),
        mode: Literal["vad", "fixed"] = Form("vad", description="vad: voice activity segments; fixed: 4 s windows every 3 s."),
    ):
        try:
            tmp, name = await run_in_threadpool(spool_upload, audio)
        except EmovoxError as exc:
            return error(422, "bad_audio", str(exc))

        def job():
            from emovox.audio import audio_duration

            try:
                seconds = audio_duration(tmp)
                if seconds > config.max_timeline_seconds:
                    raise TooLong(
                        f"{name}: {seconds:.1f} s of audio is longer than this server's timeline limit of "
                        f"{config.max_timeline_seconds:g} s"
                    )
                from emovox.inference.timeline import predict_timeline

                return predict_timeline(recognizer, tmp, mode=mode)
            except EmovoxError as exc:
                raise type(exc)(str(exc).replace(tmp, name)) from None
            finally:
                os.unlink(tmp)

        try:
            result = await worker.run_exclusive(job)
        except Busy:
            os.unlink(tmp)  # the job that deletes it will not run
            return busy(config)
        except TooLong as exc:
            return error(422, "too_long", str(exc))
        except EmovoxError as exc:
            return error(422, "bad_audio", str(exc))
        data = result.to_dict()
        data["source"] = name
        return TimelineResponse(**data)


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
