"""Prompts, label words and zero-shot answer parsing of the LLM route (tokenizers only, no models)."""

from __future__ import annotations

import pytest

from emovox.backbones.llm import tiny_tokenizer
from emovox.errors import LLMError
from emovox.llm.answers import AnswerParser, map_answers
from emovox.llm.prompts import PAPER_AUDIO_PROMPT, PromptConfig, render
from emovox.llm.scoring import PromptEncoder
from emovox.llm.verbalizers import label_words

MELD = ["angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised"]


@pytest.fixture(scope="module")
def chatml():
    return tiny_tokenizer("llama")


@pytest.fixture(scope="module")
def gemma():
    return tiny_tokenizer("gemma3")


# -- answer parsing ------------------------------------------------------------------------------

MESSY = [
    ("Joy.", "happy"),
    ("joy", "happy"),
    ("JOY!!!", "happy"),
    ("The emotion is **anger**.", "angry"),
    ("Emotion: Sadness", "sad"),
    ("happiness", "happy"),
    ("happier than ever", "happy"),
    ("She sounds scared.", "fearful"),
    ("fears", "fearful"),
    ("Fearful", "fearful"),
    ("disgusting!", "disgusted"),
    ("surprised", "surprised"),
    ("Surprise!", "surprised"),
    ("sadder", "sad"),
    ("angrily", "angry"),
    ("furious", "angry"),
    ("alegria", "happy"),
    ("alegría", "happy"),
    ("Alegrías", "happy"),
    ("enojadas", "angry"),
    ("tristeza", "sad"),
    ("Miedo.", "fearful"),
    ("asco", "disgusted"),
    ("Freude", "happy"),
    ("traurige", "sad"),
    ("Überraschung", "surprised"),
    ("wütend", "angry"),
    ("peur", "fearful"),
    ("neutral", "neutral"),
    ("Neutral.", "neutral"),
    ("no emotion", "neutral"),
    ("not angry, just sad", "sad"),
    ("The speaker is not happy but scared", "fearful"),
    ("No. Anger.", "angry"),
    ("excited", "happy"),  # outside the set: IEMOCAP's exc -> hap merge
    ("I made a mistake", None),  # "made" is not "mad"
    ("The speaker is not happy", None),
    ("I don't know", None),
    ("", None),
    ("<|im_end|>", None),
    ("frustrated", None),  # outside the set, no accepted merge
]


@pytest.mark.parametrize("answer,label", MESSY)
def test_messy_answers_map_to_labels(answer, label):
    assert AnswerParser(MELD).parse(answer).label == label


def test_custom_label_words_and_names_are_recognised():
    parser = AnswerParser(["positive", "negative"], {"positive": ["good vibes"], "negative": ["bad"]})
    assert parser.parse("Positive.").label == "positive"
    assert parser.parse("bad").label == "negative"
    assert parser.parse("good").label == "positive"


def test_fallback_is_applied_and_counted():
    parser = AnswerParser(MELD)
    result = map_answers(["joy", "hmm", "anger", "???"], parser, "neutral")
    assert result.predictions == [MELD.index("happy"), MELD.index("neutral"), MELD.index("angry"), MELD.index("neutral")]
    assert result.unparsed == 2
    assert result.summary() == {"answers": 4, "unparsed": 2, "unparsed_fraction": 0.5, "fallback": "neutral"}
    with pytest.raises(LLMError, match="fallback label 'calm'"):
        map_answers(["joy"], parser, "calm")


# -- label words ---------------------------------------------------------------------------------

def test_label_words_per_language_and_overrides():
    assert label_words(["angry", "happy", "neutral"]) == ["anger", "joy", "neutral"]
    assert label_words(["angry", "happy"], "es") == ["enojo", "alegría"]
    assert label_words(["angry", "happy"], "de") == ["Wut", "Freude"]
    assert label_words(["angry", "happy"], overrides={"happy": "happiness"}) == ["anger", "happiness"]
    with pytest.raises(LLMError, match="label 'positive' has no label word"):
        label_words(["angry", "positive"])
    with pytest.raises(LLMError, match="not in the label set"):
        label_words(["angry"], overrides={"happy": "joy"})
    with pytest.raises(LLMError, match="same label word 'joy'"):
        label_words(["angry", "happy"], overrides={"angry": "joy"})


def test_colliding_first_tokens_name_the_words(chatml):
    # neither word is in the tiny vocabulary: both start with the byte token "x"
    with pytest.raises(LLMError) as info:
        PromptEncoder(chatml, PromptConfig(), ["angry", "happy", "neutral"],
                      overrides={"angry": "xylophone", "happy": "xylem"})
    message = str(info.value)
    assert "'xylophone' (angry)" in message and "'xylem' (happy)" in message
    assert "start with token 'x'" in message and "label_words" in message
    assert "neutral" not in message.split("but with")[1]  # only the colliding ones are named


def test_distinct_words_give_distinct_first_tokens(chatml):
    enc = PromptEncoder(chatml, PromptConfig(), MELD)
    assert len(set(enc.verbalizer.first_ids)) == len(MELD)


# -- prompts -------------------------------------------------------------------------------------

def test_chat_template_wraps_the_paper_prompt(chatml):
    enc = PromptEncoder(chatml, PromptConfig(), ["angry", "happy", "neutral"])
    text = enc.rendered("I can't believe it")
    assert text.startswith("<|im_start|>system\n")
    assert "<|im_start|>user\nInstruction:\nGiven the following audio transcription" in text
    assert "The emotion can be one of the following: [anger, joy, neutral]" in text
    assert "The transcription is: I can't believe it<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert enc.verbalizer.separator == ""  # the word opens the model's turn
    assert enc.verbalizer.token_ids[1] == tuple(chatml("joy", add_special_tokens=False)["input_ids"])


def test_plain_frame_without_chat_template(chatml):
    enc = PromptEncoder(chatml, PromptConfig(chat="never"), ["angry", "happy"])
    text = enc.rendered("hello")
    assert text.endswith("The transcription is: hello\nAnswer:") and "<|im_start|>" not in text
    assert enc.verbalizer.separator == " "
    assert enc.verbalizer.token_ids[0] == tuple(chatml(" anger", add_special_tokens=False)["input_ids"])
    with pytest.raises(LLMError, match="no chat template"):
        tok = tiny_tokenizer("llama")
        tok.chat_template = None
        PromptEncoder(tok, PromptConfig(chat="always"), ["angry", "happy"])


def test_gemma_prompts_start_with_one_bos(gemma):
    bos = gemma.bos_token_id
    for chat in ("auto", "never"):
        ids = PromptEncoder(gemma, PromptConfig(chat=chat), ["angry", "happy"]).prompt_ids("hi")
        assert ids[0] == bos and ids.count(bos) == 1, chat
    chat_text = PromptEncoder(gemma, PromptConfig(), ["angry", "happy"]).rendered("hi")
    assert chat_text.endswith("<start_of_turn>model\n")


def test_spanish_prompt_and_words(chatml):
    enc = PromptEncoder(chatml, PromptConfig(language="es"), ["angry", "happy", "neutral"])
    text = enc.rendered("¡Qué alegría!")
    assert "La emoción puede ser una de las siguientes: [enojo, alegría, neutral]" in text
    assert "La transcripción es: ¡Qué alegría!" in text
    own = PromptConfig(language="es", templates={"es": "Texto: {text} Emociones: {labels}"})
    assert "Texto: hola Emociones: enojo, alegría" in render(own, chatml, text="hola", labels=["enojo", "alegría"])


def test_answer_prefix_after_the_generation_prompt(chatml):
    cfg = PromptConfig(template=PAPER_AUDIO_PROMPT, answer_prefix="emotion =")
    enc = PromptEncoder(chatml, cfg, ["angry", "happy"], audio=True)
    before, after = enc.prompt_parts("hello")
    text = chatml.decode(before + after)
    assert text.endswith("Output:<|im_end|>\n<|im_start|>assistant\nemotion =")
    assert chatml.decode(before).endswith("Audio information: ")
    assert enc.verbalizer.separator == " "


@pytest.mark.parametrize("template,audio,message", [
    ("Say {foo}: {text}", False, "not a valid template"),
    ("no transcript here", False, "no {text} placeholder"),
    ("{text} {audio}", False, "reads text only"),
    ("{text}", True, "exactly one {audio}"),
])
def test_bad_templates_are_clear_errors(chatml, template, audio, message):
    with pytest.raises(LLMError, match=message.replace("{", r"\{").replace("}", r"\}")):
        PromptEncoder(chatml, PromptConfig(template=template), ["angry", "happy"], audio=audio)


def test_long_transcripts_are_cut(chatml):
    enc = PromptEncoder(chatml, PromptConfig(template="{text}", chat="never"), ["angry", "happy"], max_text_tokens=5)
    assert len(enc.prompt_ids("the a is was it you we they this that what why")) <= 5 + len(chatml("\nAnswer:")["input_ids"]) + 1
