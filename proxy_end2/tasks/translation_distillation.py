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

import torch

from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from ..generation.output import default_stream, format_header, format_hypothesis
from ..generation.uncertainty_sequence_generator import UncertaintySequenceGenerator
from ..teachers import TEACHER_DTYPES, TeacherEnsemble, initialise_from_checkpoint, split_teacher_paths
from ..uncertainty.sequence import sequence_measure_names, token_measure_names

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
    teacher_stats_dtype: ChoiceEnum(["fp32", "fp64"]) = field(
        default="fp32",
        metadata={
            "help": "precision of the streamed teacher statistics (ln pbar, mean ln p, expected entropy). "
            "fp32 (like the authors) resolves MKL down to ~1e-7..1e-6 at K=40k, so the proxy precision of "
            "nearly agreeing teachers is underestimated up to ~10x; fp64 removes that floor at twice the memory"
        },
    )
    student_init: Optional[str] = field(
        default=None,
        metadata={
            "help": "a trained checkpoint of the same architecture family (e.g. one of the teachers) whose "
            "weights initialise the student before distillation, so that it only has to move from one member "
            "to the ensemble; parameters the checkpoint lacks (the Prior Network's output LayerNorm) keep "
            "their fresh initialisation. fairseq-train only: a resumed checkpoint_last.pt takes precedence"
        },
    )
    teacher_model_overrides: str = field(
        default="{}",
        metadata={"help": "a python dict literal of model args to override when loading the teachers"},
    )
    # generation (fairseq-generate --task translation_distillation); GenerationConfig is closed to plugins
    no_uncertainty: bool = field(
        default=False,
        metadata={"help": "generation: plain beam search, no uncertainty re-scoring and no SU-/TU- lines"},
    )
    no_token_uncertainty: bool = field(
        default=False,
        metadata={"help": "generation: print only the sequence-level SU- lines, not the token-level TU- lines"},
    )
    uncertainty_output: Optional[str] = field(
        default=None,
        metadata={
            "help": "generation: write the SU-/TU- lines to this file instead of fairseq-generate's own "
            "output (stdout, or <results-path>/generate-<subset>.txt)"
        },
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
        self._building_model = False
        self._uncertainty_stream = None
        self._header_written = False
        self._warned_batch_multiple = False

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, **kwargs):
        # fairseq-fixed's batch_by_size silently DROPS the last batch when its size is not a multiple of
        # --required-batch-size-multiple (default 8): sentences would be missing from generation and
        # validation, always the same ones. Batch sizes that are multiples of 8 only help tensor-core
        # throughput, so we never trade sentences for them.
        if required_batch_size_multiple != 1 and not self._warned_batch_multiple:
            logger.info(
                f"using --required-batch-size-multiple 1 instead of {required_batch_size_multiple}: "
                "fairseq would otherwise drop the last batch of every split"
            )
            self._warned_batch_multiple = True
        return super().get_batch_iterator(
            dataset, max_tokens=max_tokens, max_sentences=max_sentences, max_positions=max_positions,
            ignore_invalid_inputs=ignore_invalid_inputs, required_batch_size_multiple=1, **kwargs
        )

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
        stats_dtype = torch.float64 if self.cfg.teacher_stats_dtype == "fp64" else torch.float32
        sample[TEACHER_STATS_KEY] = teachers.statistics(sample["net_input"], stats_dtype=stats_dtype)
        return sample

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        sample = self._with_teacher_stats(sample, criterion)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad=ignore_grad)

    def valid_step(self, sample, model, criterion):
        sample = self._with_teacher_stats(sample, criterion)
        return super().valid_step(sample, model, criterion)

    # ------------------------------------------------------------------------------------------------
    # generation with uncertainty

    def build_model(self, cfg, from_checkpoint=False):
        # TranslationTask.build_model builds a generator for --eval-bleu: keep that one plain
        self._building_model = True
        try:
            model = super().build_model(cfg, from_checkpoint=from_checkpoint)
        finally:
            self._building_model = False
        if self.cfg.student_init and not from_checkpoint:
            initialise_from_checkpoint(model, self.cfg.student_init, self.source_dictionary, self.target_dictionary)
        return model

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None,
                        prefix_allowed_tokens_fn=None):
        if (
            seq_gen_cls is None
            and not self.cfg.no_uncertainty
            and not self._building_model
            and not getattr(args, "score_reference", False)
            and not getattr(args, "print_alignment", None)
            and prefix_allowed_tokens_fn is None
        ):
            seq_gen_cls = UncertaintySequenceGenerator
            extra_gen_cls_kwargs = dict(extra_gen_cls_kwargs or {}, nbest=getattr(args, "nbest", 1))
        return super().build_generator(
            models, args, seq_gen_cls=seq_gen_cls, extra_gen_cls_kwargs=extra_gen_cls_kwargs,
            prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
        )

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        hypos = super().inference_step(generator, models, sample, prefix_tokens=prefix_tokens,
                                       constraints=constraints)
        if isinstance(generator, UncertaintySequenceGenerator):
            self.write_uncertainty(generator, sample, hypos)
        return hypos

    def _stream(self):
        if self._uncertainty_stream is None:
            if self.cfg.uncertainty_output:
                self._uncertainty_stream = open(self.cfg.uncertainty_output, "w", buffering=1, encoding="utf-8")
            else:
                self._uncertainty_stream = default_stream()
        return self._uncertainty_stream

    def write_uncertainty(self, generator: UncertaintySequenceGenerator, sample, hypos) -> None:
        """Print the SU-/TU- lines of every re-scored hypothesis (format: docs/output-format.md)."""
        token_level = not self.cfg.no_token_uncertainty
        seq_names = sequence_measure_names(generator.kind)
        tok_names = token_measure_names(generator.kind)
        stream = self._stream()
        if not self._header_written:
            for line in format_header(generator.kind, generator.num_members, seq_names, tok_names, token_level):
                print(line, file=stream)
            self._header_written = True
        for i, sample_id in enumerate(sample["id"].tolist()):
            for rank, hypo in enumerate(hypos[i][: generator.nbest]):
                for line in format_hypothesis(sample_id, rank, hypo["uncertainty"], seq_names, tok_names,
                                              token_level):
                    print(line, file=stream)
