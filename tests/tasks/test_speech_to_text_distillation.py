"""speech_to_text_distillation on real (barely trained) s2t_transformer checkpoints and fairseq S2T data:
teachers and their statistics, dictionary checks against config.yaml's vocabulary, --student-init, generation
with uncertainty."""
import shutil
from argparse import Namespace

import numpy as np
import pytest
import torch
import yaml

from fairseq import checkpoint_utils, tasks
from fairseq.sequence_generator import SequenceGenerator

from fairseq_helpers import assert_statistics_match_stacked_members, build_s2t_cfg
from proxy_end2.checkpoints import TeacherCheckpointError
from proxy_end2.constants import TEACHER_STATS_KEY
from proxy_end2.generation.uncertainty_sequence_generator import UncertaintySequenceGenerator
from proxy_end2.tasks.speech_to_text_distillation import SpeechToTextDistillationTask
from proxy_end2.teachers import TeacherEnsemble
from speech_data import TINY_S2T_MODEL

GEN_ARGS = dict(beam=3, nbest=2, max_len_a=0, max_len_b=10, min_len=1, unnormalized=False, lenpen=1.0, unkpen=0.0,
                temperature=1.0, match_source_len=False, no_repeat_ngram_size=0)


def _cfg(data, teachers, *extra):
    args = ["--task", "speech_to_text_distillation", "--arch", "prior_s2t_transformer_xs", *TINY_S2T_MODEL,
            "--criterion", "proxy_dirichlet_distillation", "--train-subset", "train", "--valid-subset", "dev"]
    if teachers:
        args += ["--teacher-paths", ":".join(map(str, teachers))]
    return build_s2t_cfg(data, args + list(extra))


def _task(data, teachers, *extra):
    cfg = _cfg(data, teachers, *extra)
    return cfg, tasks.setup_task(cfg.task)


def _batch(task, split="dev", n=4):
    task.load_dataset(split)
    itr = task.get_batch_iterator(task.dataset(split), max_sentences=n, required_batch_size_multiple=1)
    return next(itr.next_epoch_itr(shuffle=False))


def test_task_is_speech_to_text_with_the_distillation_options(tiny_s2t_data, s2t_teachers):
    cfg, task = _task(tiny_s2t_data, s2t_teachers, "--teacher-dtype", "bf16", "--no-token-uncertainty")
    assert isinstance(task, SpeechToTextDistillationTask)
    assert task.distillation_options.teacher_dtype == "bf16" and task.distillation_options.no_token_uncertainty
    assert task.task_name == "speech_to_text_distillation"
    assert task.source_dictionary is None and len(task.target_dictionary) == 16  # 12 words + 4 specials


def test_streamed_statistics_equal_stacked_member_outputs(tiny_s2t_data, s2t_teachers):
    _, task = _task(tiny_s2t_data, s2t_teachers)
    teachers = TeacherEnsemble.load([str(p) for p in s2t_teachers], task)
    sample = _batch(task)
    assert sample["net_input"]["src_tokens"].dtype == torch.float32 and sample["net_input"]["src_tokens"].dim() == 3
    assert_statistics_match_stacked_members(teachers.statistics(sample["net_input"]), s2t_teachers, task, sample)


def test_half_precision_teachers_take_float_features(tiny_s2t_data, s2t_teachers):
    """fp32 filterbank features are cast to the teachers' dtype (the batch itself is left in fp32)."""
    _, task = _task(tiny_s2t_data, s2t_teachers)
    sample = _batch(task)
    full = TeacherEnsemble.load([str(p) for p in s2t_teachers], task).statistics(sample["net_input"])
    half = TeacherEnsemble.load([str(p) for p in s2t_teachers], task, dtype="bf16")
    stats = half.statistics(sample["net_input"])
    assert sample["net_input"]["src_tokens"].dtype == torch.float32
    assert stats.log_mean_probs.dtype == torch.float32
    torch.testing.assert_close(stats.mean_probs(), full.mean_probs(), rtol=0, atol=0.03)


def test_train_step_attaches_statistics_and_keeps_teachers_out_of_the_student(tiny_s2t_data, s2t_teachers):
    cfg, task = _task(tiny_s2t_data, s2t_teachers)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    assert len(task.teachers) == 2
    teacher_params = {id(p) for m in task.teachers.members for p in m.parameters()}
    assert not teacher_params & {id(p) for p in model.parameters()}
    assert not any(k.startswith("teacher") for k in model.state_dict())
    sample = _batch(task, "train")
    seen = {}
    original = criterion.forward

    def spy(model_, sample_, reduce=True):
        seen["stats"] = sample_.get(TEACHER_STATS_KEY)
        return original(model_, sample_, reduce=reduce)

    criterion.forward = spy
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    from fairseq.optim import FairseqOptimizer

    class _Opt(FairseqOptimizer):
        def __init__(self):
            super().__init__(Namespace())
            self._optimizer = optimizer

    loss, sample_size, log = task.train_step(sample, model, criterion, _Opt(), update_num=0)
    assert seen["stats"].log_mean_probs.shape[:2] == sample["target"].shape
    assert TEACHER_STATS_KEY not in sample  # the caller's batch is left as it was
    assert torch.isfinite(loss) and sample_size == sample["ntokens"] and log["ensemble_mkl"] >= 0


def test_criterion_without_teachers_is_a_clear_error(tiny_s2t_data):
    cfg, task = _task(tiny_s2t_data, [])
    with pytest.raises(ValueError, match="--teacher-paths .* --task speech_to_text_distillation"):
        task.build_criterion(cfg.criterion)


def test_teacher_cache_is_refused_before_training(tiny_s2t_data, tmp_path):
    _, task = _task(tiny_s2t_data, [], "--teacher-cache", str(tmp_path))
    with pytest.raises(ValueError, match="--teacher-cache is not supported by --task speech_to_text_distillation"):
        task.load_dataset("dev")


@pytest.fixture(scope="module")
def reordered_teacher(tiny_s2t_data, s2t_teachers, tmp_path_factory):
    """Teacher 1 as if trained on data whose vocabulary has the same symbols in another order (its checkpoint
    points to a copy of the data with dict.txt reversed)."""
    root = tmp_path_factory.mktemp("reordered")
    data = root / "data"
    shutil.copytree(tiny_s2t_data, data)
    lines = (data / "dict.txt").read_text().splitlines()
    (data / "dict.txt").write_text("\n".join(reversed(lines)) + "\n")
    state = torch.load(s2t_teachers[0], weights_only=False)
    state["cfg"]["task"].data = str(data)  # a legacy task stores its options as a Namespace
    torch.save(state, root / "teacher.pt")
    return root / "teacher.pt"


def test_teacher_with_another_vocabulary_is_rejected_before_training(tiny_s2t_data, s2t_teachers,
                                                                     reordered_teacher):
    cfg, task = _task(tiny_s2t_data, [s2t_teachers[0], reordered_teacher])
    with pytest.raises(TeacherCheckpointError, match=r"target dictionary .*dict\.txt.*vocab_filename"):
        task.build_criterion(cfg.criterion)
    with pytest.raises(TeacherCheckpointError, match="dictionary"):
        _task(tiny_s2t_data, s2t_teachers, "--student-init", reordered_teacher)[1].build_model(cfg.model)


def test_vocabulary_file_comes_from_the_teachers_data_config(tiny_s2t_data, s2t_teachers, tmp_path):
    """The teacher's config.yaml names its vocabulary: a renamed vocabulary file is still found and checked."""
    from proxy_end2.checkpoints import speech_vocab_path

    data = tmp_path / "data"
    shutil.copytree(tiny_s2t_data, data)
    config = yaml.safe_load((data / "config.yaml").read_text())
    (data / "dict.txt").rename(data / "spm_unigram5000.txt")
    config["vocab_filename"] = "spm_unigram5000.txt"
    (data / "config.yaml").write_text(yaml.safe_dump(config))
    assert speech_vocab_path(str(data), "config.yaml") == str(data / "spm_unigram5000.txt")
    assert speech_vocab_path(str(tmp_path / "gone"), "config.yaml") == str(tmp_path / "gone" / "config.yaml")
    state = torch.load(s2t_teachers[0], weights_only=False)
    state["cfg"]["task"].data = str(data)  # a legacy task stores its options as a Namespace
    lines = (data / "spm_unigram5000.txt").read_text().splitlines()
    (data / "spm_unigram5000.txt").write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    path = tmp_path / "teacher.pt"
    torch.save(state, path)
    cfg, task = _task(tiny_s2t_data, [path])
    with pytest.raises(TeacherCheckpointError, match="spm_unigram5000.txt.*first difference at index 4"):
        task.build_criterion(cfg.criterion)


def test_student_init_starts_exactly_at_the_teacher(tiny_s2t_data, s2t_teachers):
    """The pre-norm decoder's final LayerNorm hands its affine to the output LayerNorm: the student computes the
    teacher's log-probabilities (to the LayerNorm's eps) and recognises the same words, before any update."""
    cfg, task = _task(tiny_s2t_data, s2t_teachers, "--student-init", s2t_teachers[0])
    student = task.build_model(cfg.model).eval()
    teacher_state = torch.load(s2t_teachers[0], weights_only=True)["model"]
    state = student.state_dict()
    torch.testing.assert_close(state["decoder.prior_output_layernorm.weight"], teacher_state["decoder.layer_norm.weight"])
    (teacher,), _ = checkpoint_utils.load_model_ensemble([str(s2t_teachers[0])], task=task)
    teacher.eval()
    sample = _batch(task, "test", n=24)
    with torch.no_grad():
        logp_s = student.get_normalized_probs(student(**sample["net_input"]), log_probs=True)
        logp_t = teacher.get_normalized_probs(teacher(**sample["net_input"]), log_probs=True)
        torch.testing.assert_close(logp_s, logp_t, rtol=1e-5, atol=1e-5)
        hyps = {name: [h[0]["tokens"].tolist() for h in SequenceGenerator([m], task.target_dictionary, beam_size=3,
                                                                          max_len_b=10).generate([m], sample)]
                for name, m in (("student", student), ("teacher", teacher))}
    assert hyps["student"] == hyps["teacher"]


@pytest.mark.parametrize("which", ["student", "ensemble"])
def test_generation_writes_uncertainty_lines(tiny_s2t_data, s2t_teachers, tmp_path, which):
    cfg, task = _task(tiny_s2t_data, [], "--uncertainty-output", tmp_path / "u.txt")
    if which == "student":
        models = [task.build_model(cfg.model).eval()]
    else:
        models, _ = checkpoint_utils.load_model_ensemble([str(p) for p in s2t_teachers], task=task)
    generator = task.build_generator(models, Namespace(**GEN_ARGS))
    assert isinstance(generator, UncertaintySequenceGenerator)
    assert generator.kind == ("prior_network" if which == "student" else "ensemble")
    sample = _batch(task, "test")
    hypos = task.inference_step(generator, models, sample)
    task.close_uncertainty_output()
    assert task.teachers is None
    lines = (tmp_path / "u.txt").read_text().splitlines()
    assert sum(line.startswith("SU-") for line in lines) == sum(min(2, len(h)) for h in hypos)
    for sentence in hypos:
        for hypo in sentence[:2]:
            for values in hypo["uncertainty"]["token"].values():
                assert values.shape == hypo["tokens"].shape  # one value per target piece, EOS included


def test_plain_generation_and_unsupported_set_ups(tiny_s2t_data, tmp_path):
    cfg, task = _task(tiny_s2t_data, [], "--no-uncertainty")
    model = task.build_model(cfg.model).eval()
    generator = task.build_generator([model], Namespace(**GEN_ARGS))
    assert type(generator) is SequenceGenerator
    data = tmp_path / "data"
    shutil.copytree(tiny_s2t_data, data)
    config = yaml.safe_load((data / "config.yaml").read_text())
    config["prepend_tgt_lang_tag"] = True
    (data / "config.yaml").write_text(yaml.safe_dump(config))
    cfg, task = _task(data, [])
    with pytest.raises(ValueError, match="prepend_tgt_lang_tag.*--no-uncertainty"):
        task.build_generator([model], Namespace(**GEN_ARGS, prefix_size=1))


def test_rescoring_in_chunks_gives_the_same_values(tiny_s2t_data, s2t_teachers):
    """Chunks of a few hypotheses select a few utterances of a padded feature batch: their values must not
    depend on the chunking (the encoder sees only the frames those utterances have)."""
    cfg, task = _task(tiny_s2t_data, [])
    models, _ = checkpoint_utils.load_model_ensemble([str(p) for p in s2t_teachers], task=task)
    sample = _batch(task, "test", n=12)
    lengths = sample["net_input"]["src_lengths"]
    assert int(lengths.min()) < int(lengths.max())  # a padded batch
    values = []
    for memory_mb in (1024, 1e-6):  # everything in one pass; one hypothesis per pass
        generator = task.build_generator(models, Namespace(**GEN_ARGS))
        generator.rescorer.memory_mb = memory_mb
        hypos = task.inference_step(generator, models, sample)
        values.append([h["uncertainty"]["sequence"]["score"] for sentence in hypos for h in sentence[:2]])
    task.close_uncertainty_output()
    np.testing.assert_allclose(values[1], values[0], rtol=1e-5, atol=1e-6)
