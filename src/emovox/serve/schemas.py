"""The service's JSON responses: what every route returns, and so the OpenAPI schema at ``/openapi.json``.

Every error is ``ErrorResponse`` (``{"error": CODE, "detail": MESSAGE}``); ``ERRORS`` documents the statuses a
request can meet, and ``STATUS_CODES`` names the code each status carries.
"""

from typing import Any

from pydantic import BaseModel, Field


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


#: The error statuses a route documents (``responses=`` of each POST route).
ERRORS = {
    400: {
        "model": ErrorResponse,
        "description": "The body is not a readable form (malformed or truncated multipart/form-data).",
    },
    413: {"model": ErrorResponse, "description": "The upload is larger than the server's limit."},
    422: {"model": ErrorResponse, "description": "Not audio, too long or too short, or text the model cannot use."},
    503: {"model": ErrorResponse, "description": "Too many requests waiting; retry after the Retry-After seconds."},
}

#: HTTP status -> the ``error`` code of its JSON body.
STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    422: "invalid_request",
    503: "busy",
}
