"""Imports every command module so that each registers its commands on the app.

One line per command module; add yours here.
"""

# fmt: off
# ruff: noqa: I001  (one line per module, in the order commands are listed: parallel additions never collide)
from emovox.cli import splits  # noqa: F401
from emovox.cli import experiment  # noqa: F401
from emovox.cli import study  # noqa: F401
from emovox.cli import extract  # noqa: F401
from emovox.cli import corpus  # noqa: F401
from emovox.cli import profile  # noqa: F401
from emovox.cli import predict  # noqa: F401
from emovox.cli import serve  # noqa: F401
from emovox.cli import export  # noqa: F401
from emovox.cli import stats  # noqa: F401
from emovox.cli import vote  # noqa: F401
from emovox.cli import parts  # noqa: F401
