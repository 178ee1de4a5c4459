from . import prior_s2t_transformer, prior_transformer  # noqa: F401
