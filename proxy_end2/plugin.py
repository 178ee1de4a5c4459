"""Register proxy_end2's fairseq components: models, criteria, tasks, and safe checkpoint loading.

fairseq's ``--user-dir proxy_end2`` imports the package ``proxy_end2`` (which imports this module, fairseq
being loaded) and then every module of ``proxy_end2/tasks`` and ``proxy_end2/models``, whose packages import
this module too. From Python: ``import proxy_end2.plugin``. Idempotent.
"""
from .safe_loading import allow_fairseq_checkpoints, warn_if_weights_only_is_off

allow_fairseq_checkpoints()
warn_if_weights_only_is_off()

from . import criterions, models, tasks  # noqa: E402,F401  (registration happens at import)
