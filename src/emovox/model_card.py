"""README.md of a recognizer directory: what it is, how it was trained, how well it did, how to use it."""

from __future__ import annotations

from collections.abc import Sequence


def _model_lines(info: dict) -> list[str]:
    model = info.get("model", {})
    branches = model.get("branches") or ([model] if "backbone" in model else [])
    lines = [f"- Model kind: `{info.get('kind', model.get('kind', '?'))}` ({info.get('modality', '?')})"]
    for b in branches:
        what = b.get("input", "utterance")
        name = b.get("name") or what
        lines.append(f"- Branch `{name}`: backbone `{b.get('backbone')}`, reads the {what}, mode {b.get('mode')}")
    return lines


def model_card(info: dict, labels: Sequence[str]) -> str:
    """README.md of a recognizer directory: what it is, how it was trained, how well it did."""
    t = info.get("training", {})
    lines = [
        f"# emovox recognizer: {info.get('name', 'unnamed')}",
        "",
        *_model_lines(info),
        f"- Labels: {', '.join(labels)}",
        f"- Trained on: `{t.get('corpus', '?')}` ({t.get('train_utterances', '?')} utterances for training, "
        f"{t.get('valid_utterances', '?')} held out for early stopping: {t.get('validation', '?')})",
        f"- Corpus fingerprint: `{t.get('corpus_fingerprint', '?')}`",
        *_asr_lines(info),
        f"- Best epoch: {t.get('best_epoch', '?')}, validation UA {t.get('best_valid_ua', float('nan')):.4f}",
        f"- emovox {info.get('emovox_version', '?')}",
        "",
    ]
    cv = info.get("cross_validation")
    if cv:
        lines += [
            "## Cross-validated performance",
            "",
            f"Protocol `{cv['protocol']}`, {cv['folds']} folds, from `{cv['results']}`.",
            "",
            "| metric | mean ± std over folds | pooled |",
            "| --- | --- | --- |",
        ]
        for k in ("wa", "ua", "macro_f1"):
            lines.append(f"| {k} | {cv['mean'][k]:.4f} ± {cv['std'][k]:.4f} | {cv['pooled'][k]:.4f} |")
        lines.append("")
    reads_text = "text" in str(info.get("modality", ""))
    lines += [
        "## Use",
        "",
        "```bash",
        "emovox predict THIS_DIR clip.wav" + (' --text "the transcript"' if reads_text else ""),
        "emovox timeline THIS_DIR long_recording.wav --json timeline.json --plot timeline.png",
        "emovox serve THIS_DIR --port 8000",
        "```",
        "",
        "```python",
        "from emovox import Recognizer",
        "Recognizer.load('THIS_DIR').predict('clip.wav'" + (", text='the transcript')" if reads_text else ")"),
        "```",
        "",
    ]
    if reads_text:
        lines += [
            "This recognizer reads transcripts. Without one, audio is transcribed by the ASR model named in",
            "`emovox.json` (`asr`), or the one given with `--asr` / `Recognizer.load(..., asr=...)`.",
            "",
        ]
    return "\n".join(lines)


def _asr_lines(info: dict) -> list[str]:
    asr = info.get("asr")
    if not isinstance(asr, dict):
        return []
    language = asr.get("language") or "detected per clip"
    return [f"- ASR for clips without a transcript: `{asr.get('model')}` (language {language})"]
