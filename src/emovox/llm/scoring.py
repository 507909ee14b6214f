"""The machinery every LLM kind shares: prompt -> token ids, answer-position logits, answer loss.

Batches are padded on the left, so every prompt ends at the last position and the answer
position is the same column for the whole batch (as in generation). Position ids are computed
from the mask, so a padded prompt is encoded exactly as it is alone (tested). The LM head runs
only on the few last positions needed (``logits_to_keep``): a 49k-word vocabulary over every
prompt position would cost more than the transformer layers of a 135M model.

Training follows the paper: the label word is appended after the prompt and the loss is the
next-token cross-entropy of its tokens. The same forward pass gives the class scores, because
the logits at the last prompt position do not depend on the tokens after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from emovox.errors import LLMError
from emovox.llm.prompts import AUDIO_MARK, PromptConfig, answer_separator, render, uses_chat
from emovox.llm.verbalizers import Verbalizer, build_verbalizer, label_words


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, longest - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, longest - len(s):] = 1
    return ids, mask


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over the real tokens of each row (pads get 0 and are masked anyway)."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def append_answers(ids: torch.Tensor, mask: torch.Tensor, answers: Sequence[Sequence[int]], pad_id: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts with each row's answer tokens appended, re-padded on the left."""
    rows = [ids[i][mask[i].bool()].tolist() + list(a) for i, a in enumerate(answers)]
    return left_pad(rows, pad_id)


def answer_loss_and_scores(logits: torch.Tensor, answers: Sequence[Sequence[int]], first_ids: Sequence[int],
                           weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy of each row's answer tokens, and the class scores.

    ``logits`` are the last ``max(len(answer)) + 1`` positions of the prompts-plus-answers batch.
    Row i's answer of w tokens starts at kept position ``K - 1 - w``, which is where its prompt
    ends, so that position's label-word logits are its class scores. ``weights`` (one per row,
    e.g. class weights of the targets) weight the rows' mean token losses.
    """
    keep = logits.shape[1]
    losses, scores = [], []
    for i, answer in enumerate(answers):
        start = keep - 1 - len(answer)
        rows = logits[i, start:start + len(answer)]
        losses.append(torch.nn.functional.cross_entropy(rows.float(), torch.as_tensor(list(answer), device=logits.device)))
        scores.append(logits[i, start, list(first_ids)])
    loss_per_row = torch.stack(losses)
    if weights is None:
        loss = loss_per_row.mean()
    else:
        weights = weights.to(loss_per_row)
        loss = (loss_per_row * weights).sum() / weights.sum().clamp_min(1e-12)
    return loss, torch.stack(scores).float()


class PromptEncoder:
    """Prompts and label words for one tokenizer and label set, checked once at build time."""

    def __init__(self, tokenizer, prompt: PromptConfig, labels: Sequence[str], *, overrides=None,
                 audio: bool = False, max_text_tokens: int = 256):
        prompt.check(audio=audio)
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.audio = audio
        self.max_text_tokens = int(max_text_tokens)
        self.chat = uses_chat(prompt, tokenizer)
        self.labels = list(labels)
        self.words = label_words(self.labels, prompt.language, overrides)
        sample = render(prompt, tokenizer, text="x", labels=self.words, audio=audio)
        self.verbalizer: Verbalizer = build_verbalizer(self.labels, self.words, tokenizer, answer_separator(sample))
        if tokenizer.pad_token_id is None:
            raise LLMError(f"tokenizer {type(tokenizer).__name__} has no pad token (nor an EOS token to pad with)")
        self.pad_id = int(tokenizer.pad_token_id)

    def _clip(self, text: str | None) -> str:
        if text is None:
            return ""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= self.max_text_tokens else self.tokenizer.decode(ids[: self.max_text_tokens])

    def rendered(self, text: str | None) -> str:
        return render(self.prompt, self.tokenizer, text=self._clip(text), labels=self.words, audio=self.audio)

    def _ids(self, text: str, *, first: bool) -> list[int]:
        # chat templates write their own BOS; a plain frame gets the tokenizer's (Gemma: <bos>)
        specials = first and not self.chat
        return list(self.tokenizer(text, add_special_tokens=specials)["input_ids"])

    def prompt_ids(self, text: str) -> list[int]:
        return self._ids(self.rendered(text), first=True)

    def prompt_parts(self, text: str | None) -> tuple[list[int], list[int]]:
        """Token ids before and after the audio placeholder (audio LLMs)."""
        before, after = self.rendered(text).split(AUDIO_MARK)
        return self._ids(before, first=True), self._ids(after, first=False)

    def batch(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        ids, mask = left_pad([self.prompt_ids(t) for t in texts], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask}

    def answers(self, targets: Sequence[int]) -> list[tuple[int, ...]]:
        return training_answers(self.verbalizer, targets, self.tokenizer, self.prompt.answer_eos)


def training_answers(verbalizer: Verbalizer, targets: Sequence[int], tokenizer, eos: bool) -> list[tuple[int, ...]]:
    """The token ids the model learns to say for each target: its label word, then (``eos``) the end token.

    The paper appends the label as the model turn's first word; ending the turn too teaches a
    model that generates (zero-shot parsing after LoRA) to stop instead of repeating the word.
    """
    end = (tokenizer.eos_token_id,) if eos and tokenizer.eos_token_id is not None else ()
    return [tuple(verbalizer.token_ids[int(t)]) + end for t in targets]


def lm_logits(model, *, mask: torch.Tensor, keep: int, input_ids: torch.Tensor | None = None,
              inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of the last ``keep`` positions, ``[B, keep, V]``."""
    out = model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids(mask),
                logits_to_keep=keep, use_cache=False)
    return out.logits


def transcript(example) -> str:
    """The example's transcript, or the error the runner reports as a skipped utterance."""
    from emovox.data.examples import MissingTranscriptError

    text = getattr(example, "text", None)
    if text is None or not str(text).strip():
        raise MissingTranscriptError(
            f"utterance {example.id} has no transcript, which this LLM prompt needs; add a text column to the "
            "manifest, transcribe the audio first, or remove {text} from the prompt template"
        )
    return str(text)
