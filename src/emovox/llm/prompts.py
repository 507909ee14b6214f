"""Prompt templates as configuration, rendered the way the model was trained to read them.

The EmoSPeech paper (``shared/papers/llm-lora-emospeech.txt``, Table 1 and Figure 2) asks an
instruction-tuned LLM for the speaker's emotion and reads the answer as the first word of the
model's turn; Gemma's chat template wrapped the instruction ("user\\n[prompt]\\nmodel"). So:

- a template is plain text with ``{labels}`` (the label words, comma-separated), ``{text}``
  (the transcript) and, for audio LLMs, ``{audio}`` (where the projected audio frames go);
- when the tokenizer has a chat template the rendered prompt becomes the user turn and the
  generation prompt opens the model's turn; without one (base models such as gemma-3-270m)
  a plain frame ends the prompt with ``answer_prefix`` (default ``Answer:``);
- ``answer_prefix`` is also written at the start of the model's turn when set, e.g. the audio
  system's ``emotion =`` (Figure 2), so the label word is the very next token either way.

Templates can be given per language (``templates: {es: ...}``); ``language`` picks one and
also picks the label words (``emovox.llm.verbalizers``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from emovox.errors import LLMError

#: Table 1, the text system (Gemma 2B), with the label list filled from the label set.
PAPER_TEXT_PROMPT = (
    "Instruction:\n"
    "Given the following audio transcription, predict the emotion of the speaker.\n"
    "The emotion can be one of the following: [{labels}]\n"
    "The transcription is: {text}"
)
#: Figure 2, the Whisper + projector + frozen LLM system.
PAPER_AUDIO_PROMPT = (
    "Instruction:\n"
    "Given the following audio information and the transcription, predict the emotion of the speaker.\n"
    "The emotion can be one of the following: [{labels}]\n"
    "The transcription is: {text}\n"
    "Audio information: {audio}\n"
    "Output:"
)
#: Table 1, the Qwen-Audio-Chat system (the audio goes before the text in the user turn).
PAPER_QWEN_AUDIO_PROMPT = (
    "Select the predominant emotion from {labels}. Answer only with one of the emotion words and nothing else. "
    "Consider also its transcription: {text}"
)
#: The text prompt in Spanish (the EmoSPeech challenge's language), for ``language: es``.
SPANISH_TEXT_PROMPT = (
    "Instrucción:\n"
    "Dada la siguiente transcripción de audio, predice la emoción del hablante.\n"
    "La emoción puede ser una de las siguientes: [{labels}]\n"
    "La transcripción es: {text}"
)

AUDIO_PLACEHOLDER = "{audio}"
#: What ``{audio}`` becomes in the rendered string; the audio LLM splits the prompt there.
AUDIO_MARK = "\x00AUDIO\x00"


class PromptConfig(BaseModel):
    """How an utterance becomes a prompt (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(PAPER_TEXT_PROMPT, description="Template with {labels} and {text} (and {audio} for audio LLMs).")
    templates: dict[str, str] = Field(default_factory=dict, description="Per-language templates, e.g. {es: '...'}.")
    language: str = Field("en", description="Picks templates[language] (if given) and the label words.")
    chat: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: wrap in the tokenizer's chat template when it has one; never: plain frame."
    )
    system: str | None = Field(None, description="System message for chat templates (default: the template's own).")
    answer_prefix: str = Field("", description="Written where the answer starts, e.g. 'emotion ='.")
    plain_answer_prefix: str = Field("Answer:", description="Ends the plain frame when answer_prefix is empty.")
    answer_eos: bool = Field(
        False, description="End training answers with the tokenizer's end token (the paper does not), so that a "
        "trained model asked to generate stops after the word instead of repeating it.",
    )

    def chosen_template(self) -> str:
        if self.language in self.templates:
            return self.templates[self.language]
        if self.language == "es" and self.template == PAPER_TEXT_PROMPT:
            return SPANISH_TEXT_PROMPT
        return self.template

    def reads_text(self) -> bool:
        return "{text}" in self.chosen_template()

    def check(self, *, audio: bool) -> None:
        """Placeholders present and well formed: a template error is reported before any model loads."""
        template = self.chosen_template()
        try:
            template.format(labels="", text="", audio="")
        except (KeyError, IndexError, ValueError) as exc:
            raise LLMError(
                f"prompt template {template!r} is not a valid template ({type(exc).__name__}: {exc}); use the "
                "placeholders {labels}, {text} and {audio} only, and double literal braces as {{ }}"
            ) from None
        if "{text}" not in template and not audio:
            raise LLMError(f"prompt template {template!r} has no {{text}} placeholder for the transcript")
        if audio and template.count(AUDIO_PLACEHOLDER) != 1:
            raise LLMError(f"an audio LLM's prompt template needs exactly one {{audio}} placeholder: {template!r}")
        if not audio and AUDIO_PLACEHOLDER in template:
            raise LLMError(f"prompt template {template!r} has an {{audio}} placeholder but this model reads text only")


def uses_chat(prompt: PromptConfig, tokenizer) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if prompt.chat == "always" and not has:
        raise LLMError(
            f"prompt.chat is 'always' but the tokenizer ({type(tokenizer).__name__}) has no chat template; "
            "use chat: auto or never"
        )
    return has and prompt.chat != "never"


def render(prompt: PromptConfig, tokenizer, *, text: str, labels: list[str], audio: bool = False) -> str:
    """The full prompt string up to the answer (which is the next token after it).

    With ``audio`` the string holds ``AUDIO_MARK`` where the audio embeddings go.
    """
    body = prompt.chosen_template().format(labels=", ".join(labels), text=text, audio=AUDIO_MARK if audio else "")
    if uses_chat(prompt, tokenizer):
        messages = ([{"role": "system", "content": prompt.system}] if prompt.system else []) + [
            {"role": "user", "content": body}
        ]
        head = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return head + prompt.answer_prefix
    return f"{body}\n{prompt.answer_prefix or prompt.plain_answer_prefix}"


def answer_separator(rendered: str) -> str:
    """What precedes the label word: nothing after a newline or space, else one space ("emotion = joy")."""
    return "" if not rendered or rendered[-1] in " \n" else " "
