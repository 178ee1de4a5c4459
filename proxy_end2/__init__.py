"""proxy_end2: Proxy-Dirichlet ensemble distribution distillation for fairseq.

``fairseq-train --user-dir proxy_end2`` (or ``import proxy_end2``) registers:

* model ``prior_transformer`` and architectures ``prior_transformer_tiny``, ``prior_transformer``,
  ``prior_transformer_wmt_en_de``, ``prior_transformer_wmt_en_de_big``;
* criteria ``proxy_dirichlet_distillation``, ``dirichlet_nll_distillation``, ``ensemble_kl_distillation``;
* task ``translation_distillation``;

and lets fairseq checkpoints load under torch's safe (``weights_only``) unpickler.

The math (``proxy_end2.uncertainty``, ``proxy_end2.losses``) is pure torch and works without fairseq: when
fairseq is not installed only the fairseq components are skipped.
"""
import importlib.util

__version__ = "0.1.0"

if importlib.util.find_spec("fairseq") is not None:
    from . import safe_loading

    safe_loading.allow_fairseq_checkpoints()

    from . import criterions, models, tasks  # noqa: F401  (registration happens at import)
