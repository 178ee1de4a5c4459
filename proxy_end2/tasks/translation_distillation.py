"""``translation_distillation``: translation with a frozen teacher ensemble run at every step.

Usage (see the README for a full recipe)::

    fairseq-train DATA --user-dir proxy_end2 --task translation_distillation \\
        --teacher-paths t1/checkpoint_best.pt:t2/checkpoint_best.pt:t3/checkpoint_best.pt \\
        --arch prior_transformer_wmt_en_de_big --criterion proxy_dirichlet_distillation ...

The teachers are loaded when a distillation criterion is built (that is, by fairseq-train and
fairseq-validate, before the first step), never by fairseq-generate: a student checkpoint generates with
``--task translation_distillation`` or plain ``--task translation`` and needs no teacher.
"""

import ast
import logging
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from ..teachers import TEACHER_DTYPES, TeacherEnsemble, split_teacher_paths

logger = logging.getLogger(__name__)

#: key under which the teacher statistics travel in the sample dict, from the task to the criterion
TEACHER_STATS_KEY = "teacher_stats"


@dataclass
class TranslationDistillationConfig(TranslationConfig):
    teacher_paths: Optional[str] = field(
        default=None,
        metadata={
            "help": "teacher checkpoints in fairseq's --path syntax (colon separated: a.pt:b.pt:c.pt); "
            "required by the distillation criteria, not needed for generation"
        },
    )
    teacher_dtype: ChoiceEnum(list(TEACHER_DTYPES)) = field(
        default="fp32",
        metadata={
            "help": "precision the teachers run in (their statistics are always reduced in fp32); "
            "fp16/bf16 halve teacher memory and time on GPU"
        },
    )
    teacher_model_overrides: str = field(
        default="{}",
        metadata={"help": "a python dict literal of model args to override when loading the teachers"},
    )


@register_task("translation_distillation", dataclass=TranslationDistillationConfig)
class TranslationDistillationTask(TranslationTask):
    """Translation task that attaches teacher-ensemble statistics to every train/valid batch.

    The statistics (:class:`~proxy_end2.uncertainty.EnsembleStatistics`, [B, T, K] per field) are computed
    from the teachers' logits under teacher forcing on the batch's own ``prev_output_tokens`` and stored
    in ``sample["teacher_stats"]`` for the criterion.
    """

    cfg: TranslationDistillationConfig

    def __init__(self, cfg: TranslationDistillationConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.teachers: Optional[TeacherEnsemble] = None

    def build_criterion(self, cfg, from_checkpoint=False):
        criterion = super().build_criterion(cfg, from_checkpoint=from_checkpoint)
        if getattr(criterion, "requires_teachers", False):
            self.load_teachers()
        elif self.cfg.teacher_paths:
            logger.warning(
                f"criterion {cfg._name} does not use teachers; ignoring --teacher-paths {self.cfg.teacher_paths}"
            )
        return criterion

    def load_teachers(self) -> TeacherEnsemble:
        """Load (once) the teachers named by ``--teacher-paths``; raise a clear error if there are none."""
        if self.teachers is None:
            if not self.cfg.teacher_paths:
                raise ValueError(
                    "the distillation criteria need a teacher ensemble: pass "
                    "--teacher-paths teacher1.pt:teacher2.pt:... to --task translation_distillation"
                )
            overrides = ast.literal_eval(self.cfg.teacher_model_overrides)  # like fairseq's --model-overrides
            self.teachers = TeacherEnsemble.load(
                split_teacher_paths(self.cfg.teacher_paths),
                task=self,
                dtype=self.cfg.teacher_dtype,
                arg_overrides=overrides,
            )
            logger.info(f"teacher ensemble: {len(self.teachers)} members in {self.cfg.teacher_dtype}")
        return self.teachers

    def _with_teacher_stats(self, sample, criterion):
        if not getattr(criterion, "requires_teachers", False):
            return sample
        teachers = self.load_teachers()
        sample = dict(sample)  # shallow copy: the caller's batch is left as it was
        sample[TEACHER_STATS_KEY] = teachers.statistics(sample["net_input"])
        return sample

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        sample = self._with_teacher_stats(sample, criterion)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad=ignore_grad)

    def valid_step(self, sample, model, criterion):
        sample = self._with_teacher_stats(sample, criterion)
        return super().valid_step(sample, model, criterion)
