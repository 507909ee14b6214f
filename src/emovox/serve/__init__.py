"""An HTTP service around one ``Recognizer`` (FastAPI; run it with ``emovox serve``).

Endpoints: ``POST /predict`` (multipart: an ``audio`` upload and/or a ``text`` transcript),
``POST /timeline`` (a long recording in ``audio``: a label per segment), ``GET /health``,
``GET /labels``, the demo page at ``/`` (``serve/web``), and the OpenAPI schema at
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

The package, one job a module: ``app`` (the routes, ``create_app`` and ``serve``), ``queue`` (the one inference
thread and its bounded queue), ``limits`` (``ServeConfig``, the body-size middleware, uploads spooled, checked and
decoded), ``schemas`` (the JSON responses, which are the OpenAPI schema); ``web/`` is the demo page.
Nothing here imports torch: a recognizer's runtime serves without it.
"""
