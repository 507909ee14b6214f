"""Progress bars: plain lines in a log, nested bars silent there, real counts in ``train``."""

from __future__ import annotations

import io

import pytest
import torch

from emovox import progress
from emovox.progress import progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def fast_lines(monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)


def test_a_log_gets_plain_lines_from_the_outer_bar_only(fast_lines):
    log = io.StringIO()
    outer = progress_bar(total=3, desc="cv", unit="fold", file=log)
    for _ in range(3):
        epochs = progress_bar(total=4, desc="fold", unit="epoch", file=log)  # nested: silent in a log
        for _ in range(4):
            for _ in progress_bar(range(5), desc="epoch", unit="batch", file=log):
                pass
            epochs.update(1)
        epochs.close()
        outer.update(1)
        outer.set_postfix(ua="0.81")
    outer.close()
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text  # no carriage returns, no cursor movement
    lines = text.splitlines()
    assert lines and all(line.startswith("cv: ") for line in lines)
    assert lines[-1].startswith("cv: 3/3 fold") and "ua=0.81" in lines[-1]
    assert len(lines) == len(set(lines))  # the closing redraw does not repeat the last line


def screen(output: str) -> list[str]:
    """What a terminal shows after ``output``: the lines left on screen (carriage return, line feed and
    tqdm's cursor-up ``ESC [ A`` honoured; any other escape sequence is refused, so a new one is noticed)."""
    rows: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(output):
        ch = output[i]
        if output.startswith("\x1b[A", i):
            row, i = max(0, row - 1), i + 3
            continue
        assert ch != "\x1b", f"unexpected escape sequence {output[i:i + 6]!r}"
        if ch == "\n":
            row, col = row + 1, 0
            rows.extend([] for _ in range(row + 1 - len(rows)))
        elif ch == "\r":
            col = 0
        else:
            line = rows[row]
            line.extend(" " for _ in range(col + 1 - len(line)))
            line[col] = ch
            col += 1
        i += 1
    return [text for text in ("".join(r).rstrip() for r in rows) if text]


def test_a_terminal_gets_nested_bars_that_erase_themselves():
    term = FakeTerminal()
    outer = progress_bar(total=2, desc="cv", unit="fold", file=term)
    inner = progress_bar(total=3, desc="epochs", unit="epoch", file=term)
    assert not outer.disable and not inner.disable
    for _ in range(3):
        inner.update(1)
        inner.refresh()
    while_open = screen(term.getvalue())  # both shown, the nested bar on the line below its parent
    assert len(while_open) == 2 and while_open[0].startswith("cv:") and while_open[1].startswith("epochs:"), while_open
    inner.close()
    outer.update(2)
    outer.close()
    # what stays on screen: the outer bar's last state, and nothing of the nested one
    shown = screen(term.getvalue())
    assert len(shown) == 1 and shown[0].startswith("cv:") and "2/2" in shown[0], shown
    assert "epochs" in term.getvalue()  # it was drawn, then erased


def test_disabled_bars_are_not_parents():
    log = io.StringIO()
    quiet = progress_bar(total=2, desc="hidden", file=log, disable=True)
    shown = progress_bar(total=2, desc="shown", file=log)
    assert quiet.disable and not shown.disable  # a disabled bar does not make the next one "nested"
    shown.close()
    quiet.close()


class Probe(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.linear(batch["features"])


def test_frozen_training_bar_counts_epochs_not_a_stale_zero(fast_lines, capsys):
    """The frozen ``train`` bar used to print ``0/15`` for every epoch (tqdm's iterator keeps its
    count in a local variable; ``set_postfix`` redrew the stale one). Now one bar counts epochs."""
    from emovox.config import TrainConfig
    from emovox.data.examples import Example
    from emovox.training.trainer import Trainer

    torch.manual_seed(0)
    x = torch.randn(60, 4)
    y = (x[:, 0] > 0).long()
    examples = [Example(str(i), int(y[i]), length=1.0, cached={"x": x[i]}) for i in range(60)]
    model = Probe()
    collate = lambda batch: {"features": torch.stack([e.cached["x"] for e in batch])}  # noqa: E731
    cfg = TrainConfig(lr=0.1, batch_size=8, max_epochs=5, patience=5, threads=1)
    Trainer(model, collate, cfg, 2, progress=True, description="all data").fit(examples[:40], examples[40:])
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = [line for line in err.splitlines() if line.startswith("all data")]
    assert lines[-1].startswith("all data: 5/5 epoch") and "valid_ua=" in lines[-1]
    assert not any("batch" in line for line in err.splitlines())  # per-batch bars are nested: silent in a log
