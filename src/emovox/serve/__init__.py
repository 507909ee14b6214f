"""The HTTP service around one recognizer (``app``) and its demo page (``web/``)."""
