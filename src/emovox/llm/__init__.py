"""The LLM route (EmoSPeech paper, ``shared/papers/llm-lora-emospeech.txt``): any causal LM as an
emotion recognizer, from text (LoRA or zero-shot) or from audio through a trained projector.

- ``prompts``: templates as configuration, chat wrapping;
- ``verbalizers``: label words per label set and language, first-token checks;
- ``answers``: zero-shot free answers -> labels, fallbacks counted;
- ``scoring``: prompt batches, answer-position logits, the answer loss;
- ``lora``: peft adapters;
- model kinds: ``classifier.LLMClassifier`` (``llm-classifier``), ``audio_llm.AudioLLM``
  (``audio-llm``), ``qwen2_audio.Qwen2AudioLoRA`` (``qwen2-audio-lora``).
"""
