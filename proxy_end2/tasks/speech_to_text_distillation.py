"""``speech_to_text_distillation``: fairseq's ``speech_to_text`` with a frozen teacher ensemble run at every step.

Usage (the LibriSpeech recipe, ``examples/librispeech/``, has the full commands)::

    fairseq-train DATA --user-dir proxy_end2 --task speech_to_text_distillation --config-yaml config.yaml \\
        --train-subset train-clean-100 --valid-subset dev-clean \\
        --teacher-paths t1/checkpoint_best.pt:t2/checkpoint_best.pt:t3/checkpoint_best.pt \\
        --arch prior_s2t_transformer_s --criterion proxy_dirichlet_distillation ...

The data are fairseq's speech-to-text data (precomputed filterbank features, TSV manifests, ``config.yaml``
naming the target vocabulary); the teachers are ordinary ``s2t_transformer`` models trained on them. Every
option of ``speech_to_text`` is kept; the teacher, ``--student-init`` and uncertainty options are those of
``translation_distillation`` (:class:`~proxy_end2.tasks.distillation.DistillationConfig`), and so is all the
behaviour (:class:`~proxy_end2.tasks.distillation.DistillationTaskMixin`). fairseq's ``speech_to_text`` is a
legacy argparse task, so the options are added to its parser and read from its ``args``.

Generation: ``fairseq-generate DATA --user-dir proxy_end2 --task speech_to_text_distillation --config-yaml
config.yaml --path student.pt --gen-subset test-clean --results-path DIR`` writes fairseq's lines (``H-`` in
sentencepiece pieces, ``D-``/``T-`` in words) and the SU-/TU- lines (one TU value per piece, EOS included).
"""
from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDataset
from fairseq.tasks import register_task
from fairseq.tasks.speech_to_text import SpeechToTextTask

from ..generation.uncertainty_sequence_generator import UncertaintySequenceGenerator
from .distillation import DistillationTaskMixin, add_distillation_args


@register_task("speech_to_text_distillation")
class SpeechToTextDistillationTask(DistillationTaskMixin, SpeechToTextTask):
    """Speech-to-text task that attaches teacher-ensemble statistics to every train/valid batch.

    The teachers run with teacher forcing on the batch's own filterbank features and ``prev_output_tokens``;
    their statistics (:class:`~proxy_end2.uncertainty.EnsembleStatistics`, [B, T, K] per field) travel in
    ``sample["teacher_stats"]`` to the criterion.
    """

    @classmethod
    def add_args(cls, parser):
        """``speech_to_text``'s options plus :class:`~proxy_end2.tasks.distillation.DistillationConfig`'s."""
        SpeechToTextTask.add_args(parser)
        add_distillation_args(parser)

    def open_teacher_cache(self, split, dataset):
        """Not supported yet: the speech dataset has no per-sentence target sizes for the cache's rows."""
        raise ValueError(f"--teacher-cache is not supported by --task {self.task_name} yet (split {split!r}); "
                         "train with the teachers online (--teacher-paths, without --teacher-cache)")

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **kwargs):
        """fairseq's S2T generator, or the uncertainty generator (see
        :meth:`~proxy_end2.tasks.distillation.DistillationTaskMixin.uncertainty_generator_class`).

        fairseq's ``SpeechToTextTask.build_generator`` always builds a plain ``SequenceGenerator`` (it hands
        ``seq_gen_cls=None`` on), so the uncertainty generator is built by the base ``FairseqTask`` with the
        keyword arguments ``speech_to_text`` adds (language tags stripped from the output).
        """
        scorer = self.uncertainty_scorer(models, args, seq_gen_cls, kwargs.get("prefix_allowed_tokens_fn"))
        if scorer is not None:
            return scorer
        seq_gen_cls, extra_gen_cls_kwargs = self.uncertainty_generator_class(
            args, seq_gen_cls, extra_gen_cls_kwargs, kwargs.get("prefix_allowed_tokens_fn"))
        if seq_gen_cls is not UncertaintySequenceGenerator:
            return super(DistillationTaskMixin, self).build_generator(
                models, args, seq_gen_cls=seq_gen_cls, extra_gen_cls_kwargs=extra_gen_cls_kwargs, **kwargs)
        self.check_uncertainty_generation(models, args)
        lang_token_ids = {i for s, i in self.tgt_dict.indices.items() if SpeechToTextDataset.is_lang_tag(s)}
        extra_gen_cls_kwargs = dict(extra_gen_cls_kwargs, symbols_to_strip_from_output=lang_token_ids)
        return super(SpeechToTextTask, self).build_generator(
            models, args, seq_gen_cls=seq_gen_cls, extra_gen_cls_kwargs=extra_gen_cls_kwargs, **kwargs)

    def check_uncertainty_generation(self, models, args) -> None:
        """Raise ValueError for S2T set-ups the uncertainty generator does not handle: target language tags
        (multilingual speech translation), another end-of-sentence token, two-pass decoders."""
        config = self.data_cfg
        eos_token = getattr(args, "eos_token", None) or config.config.get("eos_token", None)
        unsupported = [
            name for name, used in (
                ("prepend_tgt_lang_tag", config.prepend_tgt_lang_tag),
                ("prepend_bos_and_append_tgt_lang_tag", config.prepend_bos_and_append_tgt_lang_tag),
                ("eos_token", bool(eos_token)),
                ("a two-pass (dual) decoder", getattr(models[0], "mt_task_name", None) is not None),
            ) if used
        ]
        if unsupported:
            raise ValueError(
                f"--task {self.task_name}: uncertainty generation supports single-language speech recognition "
                f"and translation data, not {', '.join(unsupported)}; pass --no-uncertainty for plain decoding"
            )
