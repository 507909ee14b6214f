"""Imports every command module so that each registers its commands on the app.

One line per command module; add yours here.
"""

# fmt: off
# (command modules are imported below, one per line)
from emovox.cli import (
    corpus,  # noqa: F401
    experiment,  # noqa: F401
    export,  # noqa: F401
    predict,  # noqa: F401
    profile,  # noqa: F401
    serve,  # noqa: F401
    splits,  # noqa: F401
)
