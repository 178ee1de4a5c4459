from . import translation_distillation  # noqa: F401
