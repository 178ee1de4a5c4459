"""What every distillation task of the plugin adds to its fairseq base task (not registered itself).

* the teacher ensemble (``--teacher-paths``): loaded when a distillation criterion is built (by fairseq-train
  and fairseq-validate, before the first step), never by fairseq-generate; kept in the task, so it is never a
  parameter of the student, never in the optimizer, the DDP wrapper or a checkpoint;
* its statistics, attached to every train/valid batch under :data:`~proxy_end2.constants.TEACHER_STATS_KEY`;
* or, with ``--teacher-cache DIR``, the statistics an offline run of the ensemble stored
  (:mod:`proxy_end2.teacher_cache`): no teacher is loaded; each split is checked against the cache when it is
  loaded (before training starts), and the batches get their cached rows when they are collated;
* ``--student-init``: the student starts from a trained model (fairseq-train only);
* uncertainty-aware generation: fairseq's beam search (or, with ``--score-reference``, fairseq's reference
  scorer), then one teacher-forced re-scoring pass whose SU-/TU- lines an
  :class:`~proxy_end2.generation.output.UncertaintyWriter` owned by the task writes;
* no sentence dropped: fairseq-fixed drops the last batch of a split unless its size is a multiple of
  ``--required-batch-size-multiple``;
* checkpoints checked before fairseq loads them: the one fairseq-train resumes from (repaired when a crash
  left it cut short, :mod:`~proxy_end2.checkpoint_recovery`) and fairseq-generate's ``--path`` files (safe to
  unpickle, complete, built on the task's dictionaries), so that a bad file fails at once, naming it.

A task is ``class XDistillationTask(DistillationTaskMixin, XTask)`` with a config that inherits
:class:`DistillationConfig`'s fields (a dataclass task), or, for a legacy argparse task such as fairseq's
``speech_to_text``, with :class:`DistillationConfig`'s fields added to its parser
(:func:`add_distillation_args`). The mixin reads its options through :attr:`DistillationTaskMixin.distillation_options`,
the task's ``cfg`` or its ``args``.
"""

import ast
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
from omegaconf import II

from fairseq import utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass

from ..checkpoint_recovery import DEFAULT_RESTORE_FILE, prepare_resume
from ..checkpoints import check_checkpoint_fits_model, check_checkpoints_fit_task, initialise_from_checkpoint
from ..constants import TEACHER_CACHE_KEY, TEACHER_STATS_KEY
from ..generation.output import UncertaintyWriter, uncertainty_path
from ..generation.rescoring import DEFAULT_MEMORY_MB
from ..generation.uncertainty_sequence_generator import UncertaintySequenceGenerator
from ..generation.uncertainty_sequence_scorer import UncertaintySequenceScorer
from ..teacher_cache.store import CacheExpectation, TeacherCacheSplit, data_fingerprint, teacher_fingerprints
from ..teachers import TEACHER_DTYPES, TeacherEnsemble, split_teacher_paths
from ..uncertainty.sequence import sequence_measure_names, token_measure_names
from ..uncertainty.topk import TopKStatistics

logger = logging.getLogger(__name__)


@dataclass
class DistillationConfig(FairseqDataclass):
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
            "help": "precision the teachers run in; their statistics are reduced in fp32 (or fp64, see "
            "--teacher-stats-dtype) whatever this is. fp16/bf16 halve teacher memory and time on GPU"
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
    teacher_cache: Optional[str] = field(
        default=None,
        metadata={
            "help": "train from an offline teacher cache built by proxy-end2-teacher-cache (the top-k of the "
            "ensemble mean, its tail mass, MKL, EPKL and expected entropy per target token) instead of running "
            "the teachers: no teacher is loaded. Every split the run loads must be in the cache; a cache built "
            "from other data, dictionaries or (with --teacher-paths, checked by sha256, not loaded) other "
            "teachers is refused. Proxy and KL criteria only"
        },
    )
    teacher_cache_topk: Optional[int] = field(
        default=None,
        metadata={"help": "with --teacher-cache: refuse a cache that does not keep exactly this many classes per token"},
    )
    # generation (fairseq-generate --task ...distillation); GenerationConfig is closed to plugins
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
            "help": "generation: write the SU-/TU- lines to this file (default: <results-path>/"
            "uncertainty-<subset>.txt next to fairseq's generate-<subset>.txt, or standard output without "
            "--results-path)"
        },
    )
    uncertainty_memory_mb: float = field(
        default=DEFAULT_MEMORY_MB,
        metadata={
            "help": "generation: memory budget (MiB) of one uncertainty re-scoring pass: the N-best hypotheses are "
            "re-scored in groups of similar length whose padded size fits it (about 4 bytes per padded target "
            "position and class for a Prior Network, 20 for an ensemble)"
        },
    )
    # fairseq-generate's own options, read to place the uncertainty file (no command-line flag of their own)
    results_path: Optional[str] = II("common_eval.results_path")
    gen_subset: str = II("dataset.gen_subset")
    # fairseq's checkpoint options, read to check the files fairseq will load before it loads them
    model_paths: Optional[str] = II("common_eval.path")
    resume_save_dir: Optional[str] = II("checkpoint.save_dir")
    resume_restore_file: Optional[str] = II("checkpoint.restore_file")
    resume_checkpoint_suffix: Optional[str] = II("checkpoint.checkpoint_suffix")
    resume_finetune_from_model: Optional[str] = II("checkpoint.finetune_from_model")
    resume_continue_once: Optional[str] = II("checkpoint.continue_once")


#: the fairseq options mirrored into :class:`DistillationConfig` (above) under the names fairseq gives them
FAIRSEQ_OPTION_NAMES = {"model_paths": "path", "resume_save_dir": "save_dir", "resume_restore_file": "restore_file",
                        "resume_checkpoint_suffix": "checkpoint_suffix",
                        "resume_finetune_from_model": "finetune_from_model", "resume_continue_once": "continue_once"}


def add_distillation_args(parser) -> None:
    """Add :class:`DistillationConfig`'s options to a legacy (argparse) task's parser, with their help strings and
    defaults (the generation options ``results_path``/``gen_subset`` are fairseq-generate's own)."""
    gen_parser_from_dataclass(parser, DistillationConfig())


class DistillationTaskMixin:
    """Teacher handling, ``--student-init`` and uncertainty generation for a fairseq task (see module doc)."""

    def __init__(self, cfg, *args, **kwargs):
        super().__init__(cfg, *args, **kwargs)
        self.teachers: Optional[TeacherEnsemble] = None
        self.uncertainty_writer: Optional[UncertaintyWriter] = None
        self._building_model = False
        self._warned_batch_multiple = False
        self._cache_splits: dict = {}  # split -> TeacherCacheSplit, opened and checked once
        self._teacher_fingerprints = None
        self.check_model_paths()

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

    @property
    def distillation_options(self):
        """The task's options (:class:`DistillationConfig`'s fields among them): ``cfg`` for a dataclass task,
        ``args`` for a legacy argparse task (whose ``cfg`` is None)."""
        cfg = getattr(self, "cfg", None)
        return cfg if cfg is not None else self.args

    @property
    def task_name(self) -> str:
        """The registered name of the task (for messages)."""
        opts = self.distillation_options
        return getattr(opts, "_name", None) or getattr(opts, "task", None) or type(self).__name__

    # ------------------------------------------------------------------------------------------------
    # teachers

    def build_criterion(self, cfg, from_checkpoint=False):
        # a legacy task's build_criterion(args) takes no from_checkpoint: pass it only when set
        criterion = super().build_criterion(cfg, **({"from_checkpoint": True} if from_checkpoint else {}))
        opts = self.distillation_options
        name = getattr(cfg, "_name", None) or getattr(cfg, "criterion", None)
        if getattr(criterion, "requires_teachers", False) and opts.teacher_cache:
            if not getattr(criterion, "supports_teacher_cache", False):
                raise ValueError(
                    f"criterion {name} needs every teacher's full distribution at every step, which a teacher "
                    f"cache does not store (only the top-k of the ensemble mean): train it with the teachers online "
                    f"(--teacher-paths, without --teacher-cache)"
                )
            logger.info(f"criterion {name} trains from the teacher cache {opts.teacher_cache}: no teacher loaded")
        elif getattr(criterion, "requires_teachers", False):
            self.load_teachers()
        elif opts.teacher_paths:
            logger.warning(
                f"criterion {cfg._name} does not use teachers; ignoring --teacher-paths {opts.teacher_paths}"
            )
        return criterion

    def load_teachers(self) -> TeacherEnsemble:
        """Load (once) the teachers named by ``--teacher-paths``; raise a clear error if there are none."""
        opts = self.distillation_options
        if self.teachers is None:
            if not opts.teacher_paths:
                raise ValueError(
                    "the distillation criteria need a teacher ensemble: pass "
                    f"--teacher-paths teacher1.pt:teacher2.pt:... to --task {self.task_name}"
                )
            overrides = ast.literal_eval(opts.teacher_model_overrides)  # like fairseq's --model-overrides
            self.teachers = TeacherEnsemble.load(
                split_teacher_paths(opts.teacher_paths),
                task=self,
                dtype=opts.teacher_dtype,
                arg_overrides=overrides,
            )
            logger.info(f"teacher ensemble: {len(self.teachers)} members in {opts.teacher_dtype}")
        return self.teachers

    def _with_teacher_stats(self, sample, criterion):
        if not getattr(criterion, "requires_teachers", False):
            return sample
        sample = dict(sample)  # shallow copy: the caller's batch is left as it was
        opts = self.distillation_options
        if opts.teacher_cache:
            sample[TEACHER_STATS_KEY] = self._cached_statistics(sample)
            return sample
        teachers = self.load_teachers()
        stats_dtype = torch.float64 if opts.teacher_stats_dtype == "fp64" else torch.float32
        sample[TEACHER_STATS_KEY] = teachers.statistics(sample["net_input"], stats_dtype=stats_dtype,
                                                        sample_ids=sample.get("id"))
        return sample

    # ------------------------------------------------------------------------------------------------
    # offline teacher cache (--teacher-cache)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        if self.distillation_options.teacher_cache:
            from ..teacher_cache.dataset import TeacherCacheDataset

            cache = self.open_teacher_cache(split, self.datasets[split])
            self.datasets[split] = TeacherCacheDataset(self.datasets[split], cache, self.target_dictionary.pad())

    def cache_target_lengths(self, dataset):
        """Target tokens (EOS included) of every sentence of ``dataset``, as the cache stores them."""
        if getattr(dataset, "tgt_sizes", None) is None:
            raise ValueError(f"--teacher-cache needs a dataset with target sizes (tgt_sizes); {type(dataset).__name__} "
                             "has none")
        return dataset.tgt_sizes

    def open_teacher_cache(self, split: str, dataset) -> TeacherCacheSplit:
        """Open the cache of ``split`` once and check it against the data, dictionaries, teachers and k."""
        if split in self._cache_splits:
            return self._cache_splits[split]
        opts = self.distillation_options
        paths = utils.split_paths(opts.data)
        if len(paths) != 1:
            raise ValueError(f"--teacher-cache needs one data directory, got {len(paths)} ({opts.data})")
        if opts.teacher_paths and self._teacher_fingerprints is None:
            self._teacher_fingerprints = teacher_fingerprints(split_teacher_paths(opts.teacher_paths))
        cache = TeacherCacheSplit(opts.teacher_cache, split)
        cache.check(CacheExpectation(
            split=split, num_classes=len(self.target_dictionary), target_lengths=self.cache_target_lengths(dataset),
            data=data_fingerprint(paths[0], split), teachers=self._teacher_fingerprints, topk=opts.teacher_cache_topk,
            settings={"truncate_source": bool(getattr(opts, "truncate_source", False))}))
        m = cache.manifest
        for other in self._cache_splits.values():  # every split from the same teachers and k
            if any(other.manifest[key] != m[key] for key in ("teachers", "topk", "num_members", "settings")):
                raise ValueError(f"--teacher-cache: the caches of splits {other.split!r} and {split!r} were built "
                                 "from other teachers or with another --topk; build them again together")
        logger.info(f"teacher cache {opts.teacher_cache} [{split}]: {m['sentences']} sentences, {m['tokens']} target "
                    f"tokens, top {m['topk']} of K = {m['num_classes']}, {m['num_members']} teachers "
                    f"({', '.join(t['path'] for t in m['teachers'])})"
                    + (f"; {cache.missing} sentences not cached" if cache.missing else ""))
        self._cache_splits[split] = cache
        return cache

    def _cached_statistics(self, sample) -> TopKStatistics:
        fields = sample.get(TEACHER_CACHE_KEY)
        if fields is None:
            raise ValueError("--teacher-cache: this batch carries no cached teacher statistics (its dataset was not "
                             "loaded by this task's load_dataset)")
        cache = next(iter(self._cache_splits.values()))
        return TopKStatistics(**fields, num_classes=cache.num_classes, num_members=cache.num_members)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        sample = self._with_teacher_stats(sample, criterion)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad=ignore_grad)

    def valid_step(self, sample, model, criterion):
        sample = self._with_teacher_stats(sample, criterion)
        return super().valid_step(sample, model, criterion)

    def build_model(self, cfg, from_checkpoint=False):
        # the base task may build a generator for --eval-bleu while building the model: keep that one plain
        self._building_model = True
        try:
            model = super().build_model(cfg, from_checkpoint=from_checkpoint)
        finally:
            self._building_model = False
        if not from_checkpoint:  # fairseq-train (a checkpoint being loaded builds with from_checkpoint=True)
            self.check_resume_checkpoint(model)
        student_init = self.distillation_options.student_init
        if student_init and not from_checkpoint:
            initialise_from_checkpoint(model, student_init, self.source_dictionary, self.target_dictionary)
        return model

    # ------------------------------------------------------------------------------------------------
    # checkpoints fairseq loads itself: checked before it does

    def fairseq_option(self, name: str):
        """A fairseq option mirrored into the task config (``II`` above; a legacy task's ``args`` hold all of
        fairseq's options under their own names, :data:`FAIRSEQ_OPTION_NAMES`), or None where it cannot be
        resolved (a task config used on its own, outside fairseq's full configuration)."""
        legacy = getattr(self, "cfg", None) is None
        try:
            value = getattr(self.distillation_options, FAIRSEQ_OPTION_NAMES[name] if legacy else name, None)
        except Exception:  # omegaconf's interpolation errors outside a full config
            return None
        return None if isinstance(value, str) and value.startswith("${") else value

    def check_model_paths(self) -> None:
        """fairseq-generate / fairseq-interactive: every existing ``--path`` file is safe to unpickle, complete,
        and built on the task's dictionaries (fairseq's own error names a missing one)."""
        paths = self.fairseq_option("model_paths")
        if paths:
            existing = [p for p in utils.split_paths(paths) if os.path.isfile(p)]
            check_checkpoints_fit_task(existing, self.source_dictionary, self.target_dictionary,
                                       "model checkpoint (--path)")

    def check_resume_checkpoint(self, model) -> None:
        """fairseq-train: check (and on rank 0 repair) the checkpoint it will resume from (checkpoint_recovery);
        on rank 0, which loads it, check that it fits ``model``, the student just built."""
        save_dir = self.fairseq_option("resume_save_dir")
        if not save_dir:
            return
        rank0 = not (torch.distributed.is_available() and torch.distributed.is_initialized()) \
            or torch.distributed.get_rank() == 0
        path = prepare_resume(save_dir, self.fairseq_option("resume_restore_file") or DEFAULT_RESTORE_FILE,
                              self.fairseq_option("resume_checkpoint_suffix") or "",
                              self.fairseq_option("resume_finetune_from_model"),
                              self.fairseq_option("resume_continue_once"), repair=rank0)
        if path is not None and rank0:
            check_checkpoint_fits_model(path, model, "checkpoint to resume from")

    # ------------------------------------------------------------------------------------------------
    # generation with uncertainty

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **kwargs):
        scorer = self.uncertainty_scorer(models, args, seq_gen_cls, kwargs.get("prefix_allowed_tokens_fn"))
        if scorer is not None:
            return scorer
        seq_gen_cls, extra_gen_cls_kwargs = self.uncertainty_generator_class(
            args, seq_gen_cls, extra_gen_cls_kwargs, kwargs.get("prefix_allowed_tokens_fn"))
        return super().build_generator(
            models, args, seq_gen_cls=seq_gen_cls, extra_gen_cls_kwargs=extra_gen_cls_kwargs, **kwargs
        )

    def _with_uncertainty(self, args, seq_gen_cls=None, prefix_allowed_tokens_fn=None) -> bool:
        """Whether to generate with uncertainty: not when the caller asked for its own generator class, for
        alignments, constrained search, a generator built while building the model, or ``--no-uncertainty``."""
        return (
            seq_gen_cls is None
            and not self.distillation_options.no_uncertainty
            and not self._building_model
            and not getattr(args, "print_alignment", None)
            and prefix_allowed_tokens_fn is None
        )

    def uncertainty_scorer(self, models, args, seq_gen_cls=None, prefix_allowed_tokens_fn=None):
        """An :class:`UncertaintySequenceScorer` (and a fresh writer) for ``--score-reference`` with uncertainty
        on; None otherwise."""
        if not (getattr(args, "score_reference", False) and self._with_uncertainty(args, seq_gen_cls,
                                                                                   prefix_allowed_tokens_fn)):
            return None
        self._open_uncertainty_output()
        return UncertaintySequenceScorer(models, self.target_dictionary,
                                         memory_mb=self.distillation_options.uncertainty_memory_mb)

    def uncertainty_generator_class(self, args, seq_gen_cls=None, extra_gen_cls_kwargs=None,
                                    prefix_allowed_tokens_fn=None):
        """``(generator class, its extra keyword arguments)`` for ``build_generator``: the caller's, or
        :class:`UncertaintySequenceGenerator` (and a fresh :class:`UncertaintyWriter`) for beam search with
        uncertainty on (see :meth:`_with_uncertainty`; reference scoring: :meth:`uncertainty_scorer`)."""
        if getattr(args, "score_reference", False) or not self._with_uncertainty(args, seq_gen_cls,
                                                                                 prefix_allowed_tokens_fn):
            return seq_gen_cls, extra_gen_cls_kwargs
        extra_gen_cls_kwargs = dict(extra_gen_cls_kwargs or {}, nbest=getattr(args, "nbest", 1),
                                    memory_mb=self.distillation_options.uncertainty_memory_mb)
        self._open_uncertainty_output()
        return UncertaintySequenceGenerator, extra_gen_cls_kwargs

    def _open_uncertainty_output(self) -> None:
        opts = self.distillation_options
        self.close_uncertainty_output()
        # a legacy task's args have fairseq-generate's --results-path/--gen-subset only under fairseq-generate
        self.uncertainty_writer = UncertaintyWriter(
            uncertainty_path(getattr(opts, "results_path", None), getattr(opts, "gen_subset", "test"),
                             opts.uncertainty_output),
            token_level=not opts.no_token_uncertainty,
        )

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        hypos = super().inference_step(generator, models, sample, prefix_tokens=prefix_tokens,
                                       constraints=constraints)
        if isinstance(generator, (UncertaintySequenceGenerator, UncertaintySequenceScorer)):
            self.write_uncertainty(generator, sample, hypos)
        return hypos

    def write_uncertainty(self, generator, sample, hypos) -> None:
        """Write the SU-/TU- lines of every re-scored hypothesis (format: docs/output-format.md)."""
        if self.uncertainty_writer is None:
            self.uncertainty_writer = UncertaintyWriter(
                token_level=not self.distillation_options.no_token_uncertainty)
        items = [(sample_id, rank, hypo["uncertainty"])
                 for i, sample_id in enumerate(sample["id"].tolist())
                 for rank, hypo in enumerate(hypos[i][: generator.nbest])]
        self.uncertainty_writer.write(generator.kind, generator.num_members, sequence_measure_names(generator.kind),
                                      token_measure_names(generator.kind), items)

    def close_uncertainty_output(self) -> None:
        """Close the uncertainty file (if any); the next generator opens a new one."""
        if self.uncertainty_writer is not None:
            self.uncertainty_writer.close()
            self.uncertainty_writer = None
