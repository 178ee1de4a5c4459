from . import prior_transformer  # noqa: F401
