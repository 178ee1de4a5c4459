from . import speech_to_text_distillation, translation_distillation  # noqa: F401
