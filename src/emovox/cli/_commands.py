"""Which module of ``emovox.cli`` defines each command, in the order ``emovox --help`` lists them.

Command modules are imported when their command runs (``emovox predict`` imports ``emovox.cli.predict``
and nothing of training) or when the whole list is shown. One line per command; add yours here
(``tests/test_runtime_cli.py`` checks that this table and the modules agree).
"""

# fmt: off
COMMANDS = {
    "splits": "splits",
    "cv": "experiment",
    "train": "experiment",
    "evaluate": "experiment",
    "study": "study",
    "extract": "extract",
    "corpus": "corpus",
    "profile": "profile",
    "predict": "predict",
    "timeline": "timeline",
    "serve": "serve",
    "demo": "serve",
    "export": "export",
    "compare": "stats",
    "ci": "stats",
    "vote": "vote",
    "merge": "parts",
}
