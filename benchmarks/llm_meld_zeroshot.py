"""Zero-shot SmolLM2-135M-Instruct on a seeded sample of the MELD test split: the paper's zero-shot route.

No training and no choice is made on these utterances: the prompt is the paper's (Table 1) in
SmolLM2's own chat template, the label words are emovox's defaults (anger, disgust, fear, joy,
neutral, sadness, surprise), the sample is drawn once with a fixed seed from the official test
split (``meld:...?splits=test`` through emovox's MELD reader). Two readings of the same model:

- generate + parse (what the paper did with Qwen-Audio): greedy decoding of a short answer,
  mapped to a label by ``emovox.llm.answers``; answers naming no emotion fall back to
  ``neutral`` and are counted;
- the logit selector: argmax of the label words' first-token logits at the answer position
  (what the LoRA classifier is trained and scored with).

Reported for each: weighted-F1 (MELD's usual metric), macro-F1, WA, UA, with 95% percentile
bootstrap intervals over utterances (``emovox.evaluation.stats``), and the majority-class (neutral)
reference on the same sample. SmolLM2's weights are dequantised from a 4-bit GGUF (Q4_1), so
they are a slightly lossy copy of the original model.

    python benchmarks/llm_meld_zeroshot.py [--n 200] [--seed 0] [--threads 1] [--out results.json]

``--runs RUN_DIR...`` loads no model: it scores finished runs (their ``predictions.csv``, which
must cover these test utterances, e.g. a LoRA run on the official test split) on the same seeded
sample, so that trained systems can be set beside the zero-shot figures on identical utterances.

    python benchmarks/llm_meld_zeroshot.py --n 200 --runs runs/meld-smollm2-lora
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVOX_SHARED", REPO.parent / "shared"))


def scores(y_true, y_pred, labels, seed: int) -> dict:
    from emovox.evaluation.metrics import compute_metrics
    from emovox.evaluation.stats import confidence_intervals

    m = compute_metrics(y_true, y_pred, labels)
    ci = confidence_intervals(y_true, y_pred, labels, seed=seed)
    return {k: {"value": round(getattr(m, k), 4), "ci95": [round(ci[k].low, 4), round(ci[k].high, 4)]}
            for k in ("weighted_f1", "macro_f1", "wa", "ua")}


def score_runs(runs: list[Path], utterances: list, labels: list[str], seed: int) -> None:
    """Each run's saved test predictions restricted to the sample, with the same metrics and intervals."""
    from emovox.evaluation.predictions import load_predictions

    for run in runs:
        table = load_predictions(run / "predictions.csv", labels)
        row = {uid: i for i, uid in enumerate(table.ids)}
        absent = [u.id for u in utterances if u.id not in row]
        if absent:
            raise SystemExit(f"{run}: {len(absent)} sampled utterances have no prediction (e.g. {absent[:3]})")
        idx = [row[u.id] for u in utterances]
        truth, pred = table.true[idx].tolist(), table.pred[idx].tolist()
        if truth != [labels.index(u.label) for u in utterances]:
            raise SystemExit(f"{run}: its true labels differ from the corpus's on the sample")
        result = {"run": str(run), "n": len(idx), "seed": seed, **scores(truth, pred, labels, seed),
                  "predicted": dict(Counter(labels[p] for p in pred))}
        print(json.dumps(result, ensure_ascii=False))


def main() -> None:
    from emovox.corpora import load_corpus
    from emovox.data.examples import Example
    from emovox.llm.classifier import LLMClassifier, LLMClassifierConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llm", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--runs", type=Path, nargs="+", default=None,
                        help="score these runs' saved test predictions on the sample instead of running the LLM")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    corpus = load_corpus(f"meld:{SHARED / 'data' / 'meld'}?splits=test")
    labels = list(corpus.labels)
    utterances = random.Random(args.seed).sample(list(corpus), min(args.n, len(corpus)))
    examples = [Example(u.id, labels.index(u.label), text=u.text) for u in utterances]
    truth = [e.target for e in examples]
    print(f"MELD test: {len(corpus)} utterances; sample of {len(examples)} (seed {args.seed}): "
          f"{dict(Counter(u.label for u in utterances))}; load average {os.getloadavg()[0]:.2f}", flush=True)

    if args.runs:
        score_runs(args.runs, utterances, labels, args.seed)
        return
    model = LLMClassifier.build(LLMClassifierConfig(llm=args.llm, mode="zero-shot"), labels, seed=0).eval()
    t0 = time.perf_counter()
    zero_shot = model.zero_shot_answers(examples, batch_size=args.batch_size)
    generate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.inference_mode():
        logits = torch.cat([model(model.collate(examples[i:i + args.batch_size]))
                            for i in range(0, len(examples), args.batch_size)])
    score_s = time.perf_counter() - t0
    selector = logits.argmax(-1).tolist()
    majority = [labels.index("neutral")] * len(examples)

    results = {
        "llm": args.llm, "note": "weights dequantised from a 4-bit GGUF", "split": "MELD test",
        "n": len(examples),
        "seed": args.seed, "threads": args.threads, "labels": labels, "label_words": model.encoder.words,
        "generate_and_parse": {**scores(truth, zero_shot.predictions, labels, args.seed),
                               "unparsed": zero_shot.unparsed, "fallback": zero_shot.fallback,
                               "predicted": dict(Counter(labels[p] for p in zero_shot.predictions)),
                               "seconds": round(generate_s, 1)},
        "logit_selector": {**scores(truth, selector, labels, args.seed),
                           "predicted": dict(Counter(labels[p] for p in selector)), "seconds": round(score_s, 1)},
        "majority_neutral": scores(truth, majority, labels, args.seed),
        "answer_examples": [{"text": e.text, "answer": a, "parsed": p.label}
                            for e, a, p in list(zip(examples, zero_shot.answers, zero_shot.parsed, strict=True))[:12]],
    }
    print(json.dumps(results, indent=2, ensure_ascii=False))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    g, s, m = results["generate_and_parse"], results["logit_selector"], results["majority_neutral"]
    print(f"generate_weighted_f1={g['weighted_f1']['value']} generate_macro_f1={g['macro_f1']['value']} "
          f"unparsed={g['unparsed']}/{len(examples)} selector_weighted_f1={s['weighted_f1']['value']} "
          f"selector_macro_f1={s['macro_f1']['value']} majority_weighted_f1={m['weighted_f1']['value']}")


if __name__ == "__main__":
    main()
