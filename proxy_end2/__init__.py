"""proxy_end2: Proxy-Dirichlet ensemble distribution distillation for fairseq.

``fairseq-train --user-dir proxy_end2`` (and every other fairseq command given ``--user-dir proxy_end2``)
registers the plugin's fairseq components (:mod:`proxy_end2.plugin`):

* model ``prior_transformer`` and architectures ``prior_transformer_tiny``, ``prior_transformer``,
  ``prior_transformer_wmt_en_de``, ``prior_transformer_wmt_en_de_big``;
* model ``prior_s2t_transformer`` and architectures ``prior_s2t_transformer_xs``, ``_s``, ``_m``;
* criteria ``proxy_dirichlet_distillation``, ``forward_proxy_dirichlet_distillation``,
  ``dirichlet_nll_distillation``, ``ensemble_kl_distillation``;
* tasks ``translation_distillation`` and ``speech_to_text_distillation``;

and lets fairseq checkpoints load under torch's safe (``weights_only``) unpickler.

The rest is usable without fairseq and never imports it: the math (:mod:`proxy_end2.uncertainty`,
:mod:`proxy_end2.losses`, pure torch) and the evaluator (:mod:`proxy_end2.evaluation`, numpy/sklearn), so
that ``proxy-end2-evaluate`` starts fast. Importing this package registers the plugin only when fairseq is
already imported (as in every fairseq command); from Python, ``import proxy_end2.plugin`` registers it
explicitly.
"""
import sys

__version__ = "0.1.0"

if "fairseq" in sys.modules:  # imported by fairseq (--user-dir) or after it: register with it now
    from . import plugin  # noqa: F401
