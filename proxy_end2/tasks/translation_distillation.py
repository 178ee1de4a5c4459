"""``translation_distillation``: translation with a frozen teacher ensemble run at every step.

Usage (see the README for a full recipe)::

    fairseq-train DATA --user-dir proxy_end2 --task translation_distillation \\
        --teacher-paths t1/checkpoint_best.pt:t2/checkpoint_best.pt:t3/checkpoint_best.pt \\
        --arch prior_transformer_wmt_en_de_big --criterion proxy_dirichlet_distillation ...

The teachers are loaded when a distillation criterion is built (that is, by fairseq-train and
fairseq-validate, before the first step), never by fairseq-generate: a student checkpoint generates with
``--task translation_distillation`` (with uncertainty) or plain ``--task translation`` and needs no teacher.
Everything but the base task is :class:`~proxy_end2.tasks.distillation.DistillationTaskMixin`.
"""
from dataclasses import dataclass

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from .distillation import DistillationConfig, DistillationTaskMixin


@dataclass
class TranslationDistillationConfig(TranslationConfig, DistillationConfig):
    """fairseq's ``translation`` options plus the teacher and uncertainty options of :class:`DistillationConfig`."""


@register_task("translation_distillation", dataclass=TranslationDistillationConfig)
class TranslationDistillationTask(DistillationTaskMixin, TranslationTask):
    """Translation task that attaches teacher-ensemble statistics to every train/valid batch.

    The statistics (:class:`~proxy_end2.uncertainty.EnsembleStatistics`, [B, T, K] per field) are computed
    from the teachers' logits under teacher forcing on the batch's own ``prev_output_tokens`` and stored
    in ``sample["teacher_stats"]`` for the criterion.
    """

    cfg: TranslationDistillationConfig
