"""Loading a backbone: ``load_backbone`` builds one from a registry name, a hub id, or a local directory (an HF
model directory or one written by ``Backbone.save``); ``tiny=True`` builds a small random model of the same class
with an offline tokenizer/feature extractor, for tests and smoke runs.

The dispatch only: which family's builder (``smile``, ``text``, ``speech``) builds the backbone, and the length caps
a saved directory recorded. The builders read weights through ``base.from_pretrained_checked``.
"""

from __future__ import annotations

from pathlib import Path

from emovox.backbones.base import DEFAULT_MAX_SECONDS, DEFAULT_MAX_TOKENS, Backbone
from emovox.backbones.registry import EMOVOX_FILE, get_spec, read_emovox_file
from emovox.errors import BackboneError


def load_backbone(
    name_or_path: str | Path,
    *,
    tiny: bool = False,
    max_tokens: int | None = None,
    max_seconds: float | None = None,
    seed: int = 0,
) -> Backbone:
    """Build the backbone named by a registry name, hub id or local directory (in eval mode).

    ``max_tokens``/``max_seconds`` default to what a saved directory recorded, else to the
    paper's 100 tokens / 10 s. ``tiny=True`` never downloads: a small random model of the same
    class (seeded by ``seed``), with an offline tokenizer or feature extractor. An openSMILE
    backbone has nothing to shrink: ``tiny`` builds the real one.
    """
    spec = get_spec(name_or_path)
    saved: dict = {}
    directory = Path(spec.hub_id)
    if not tiny and (directory / EMOVOX_FILE).is_file():
        saved = read_emovox_file(directory)
    max_tokens = int(max_tokens if max_tokens is not None else saved.get("max_tokens", DEFAULT_MAX_TOKENS))
    max_seconds = float(max_seconds if max_seconds is not None else saved.get("max_seconds", DEFAULT_MAX_SECONDS))
    if max_tokens < 4:
        raise BackboneError(f"max_tokens must be at least 4 (got {max_tokens})")
    if not max_seconds > 0:
        raise BackboneError(f"max_seconds must be positive (got {max_seconds})")
    if spec.family == "opensmile":
        from emovox.backbones.smile import build_smile_backbone

        backbone = build_smile_backbone(spec, saved, max_tokens=max_tokens, max_seconds=max_seconds)
    elif spec.modality == "text":
        from emovox.backbones.text import build_text_backbone

        backbone = build_text_backbone(spec, tiny=tiny, max_tokens=max_tokens, max_seconds=max_seconds, seed=seed)
    else:
        from emovox.backbones.speech import build_audio_backbone

        backbone = build_audio_backbone(spec, tiny=tiny, max_tokens=max_tokens, max_seconds=max_seconds, seed=seed)
    return backbone.eval()
