"""The teacher ensemble and the translation_distillation task, on real (barely trained) fairseq checkpoints."""
import copy

import pytest
import torch

from conftest import make_binarised_data, run_fairseq, teacher_train_args
from fairseq_helpers import assert_statistics_match_stacked_members, build_cfg, build_task_and_model
from proxy_end2.constants import TEACHER_STATS_KEY
from proxy_end2.tasks.translation_distillation import TranslationDistillationTask
from proxy_end2.checkpoints import TeacherCheckpointError
from proxy_end2.teachers import TeacherEnsemble


def _task_cfg(data, teachers, *extra):
    args = ["--task", "translation_distillation", "--arch", "prior_transformer_tiny",
            "--criterion", "proxy_dirichlet_distillation"]
    if teachers:
        args += ["--teacher-paths", ":".join(map(str, teachers))]
    return build_cfg(data, args + list(extra))


def _batch(task, split="valid"):
    task.load_dataset(split)
    itr = task.get_batch_iterator(task.dataset(split), max_sentences=4, required_batch_size_multiple=1)
    return next(itr.next_epoch_itr(shuffle=False))


def test_streamed_statistics_equal_stacked_member_outputs(tiny_data, quick_teachers):
    cfg = _task_cfg(tiny_data, quick_teachers)
    from fairseq import tasks

    task = tasks.setup_task(cfg.task)
    teachers = TeacherEnsemble.load([str(p) for p in quick_teachers], task)
    assert len(teachers) == 2
    for member in teachers.members:
        assert not member.training
        assert all(not p.requires_grad for p in member.parameters())
    sample = _batch(task)
    # independent path: fairseq's own loader, each member run separately, then stacked on dim -2
    assert_statistics_match_stacked_members(teachers.statistics(sample["net_input"]), quick_teachers, task, sample)


def test_half_precision_teachers_give_fp32_statistics(tiny_data, quick_teachers):
    from fairseq import tasks

    task = tasks.setup_task(_task_cfg(tiny_data, quick_teachers).task)
    sample = _batch(task)
    full = TeacherEnsemble.load([str(p) for p in quick_teachers], task).statistics(sample["net_input"])
    half = TeacherEnsemble.load([str(p) for p in quick_teachers], task, dtype="bf16")
    assert all(p.dtype == torch.bfloat16 for m in half.members for p in m.parameters())
    stats = half.statistics(sample["net_input"])
    assert stats.log_mean_probs.dtype == torch.float32
    # bf16 has 8 bits of mantissa: logits of magnitude ~5 are off by ~0.02
    torch.testing.assert_close(stats.mean_probs(), full.mean_probs(), rtol=0, atol=0.03)


def test_missing_teacher_checkpoint(tiny_data, quick_teachers, tmp_path):
    from fairseq import tasks

    cfg = _task_cfg(tiny_data, [quick_teachers[0], tmp_path / "nope.pt"])
    task = tasks.setup_task(cfg.task)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        task.build_criterion(cfg.criterion)


def test_criterion_without_teachers_is_a_clear_error(tiny_data):
    from fairseq import tasks

    cfg = _task_cfg(tiny_data, [])
    task = tasks.setup_task(cfg.task)
    with pytest.raises(ValueError, match="--teacher-paths"):
        task.build_criterion(cfg.criterion)


@pytest.fixture(scope="module")
def foreign_teacher(tmp_path_factory):
    """A teacher trained on other data: same number of words, other symbols."""
    root = tmp_path_factory.mktemp("foreign")
    data = make_binarised_data(root, vocab_size=40, seed=7)
    run_fairseq("train", teacher_train_args(data, root / "t", 1, extra=["--max-update", "1"]), root / "t.log")
    return data, root / "t" / "checkpoint_last.pt"


def test_teacher_with_other_dictionary_is_rejected_before_training(tiny_data, quick_teachers, foreign_teacher):
    from fairseq import tasks

    _, foreign = foreign_teacher
    cfg = _task_cfg(tiny_data, [quick_teachers[0], foreign])
    task = tasks.setup_task(cfg.task)
    with pytest.raises(TeacherCheckpointError, match="dictionary"):
        task.build_criterion(cfg.criterion)


def test_teacher_with_other_vocabulary_size_is_rejected(tiny_data, quick_teachers, tmp_path):
    from fairseq import tasks

    state = torch.load(quick_teachers[0], weights_only=True)
    bad = copy.deepcopy(state)
    w = bad["model"]["decoder.embed_tokens.weight"]
    bad["model"]["decoder.embed_tokens.weight"] = torch.cat([w, w[:3]])
    bad["model"]["decoder.output_projection.weight"] = bad["model"]["decoder.embed_tokens.weight"]
    bad["cfg"]["task"]["data"] = str(tmp_path / "gone")  # dictionary files unreadable: size check only
    path = tmp_path / "bigger_vocab.pt"
    torch.save(bad, path)
    cfg = _task_cfg(tiny_data, [path])
    task = tasks.setup_task(cfg.task)
    with pytest.raises(TeacherCheckpointError, match="target classes"):
        task.build_criterion(cfg.criterion)


def test_train_step_attaches_statistics_and_keeps_teachers_out_of_the_student(tiny_data, quick_teachers):
    from fairseq import tasks

    cfg = _task_cfg(tiny_data, quick_teachers)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    assert task.teachers is not None and len(task.teachers) == 2
    teacher_params = {id(p) for m in task.teachers.members for p in m.parameters()}
    assert not teacher_params & {id(p) for p in model.parameters()}
    assert not teacher_params & {id(p) for p in criterion.parameters()}
    assert not any("teacher" in k for k in model.state_dict())

    sample = _batch(task, "train")
    keys_before = set(sample)
    seen = {}
    original_forward = criterion.forward

    def spy(model, sample, reduce=True):
        seen["stats"] = sample[TEACHER_STATS_KEY]
        return original_forward(model, sample, reduce)

    criterion.forward = spy
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)

    class _Opt:  # the three methods FairseqTask.train_step uses
        def backward(self, loss):
            loss.backward()

    loss, sample_size, log = task.train_step(sample, model, criterion, _Opt(), update_num=0)
    assert set(sample) == keys_before, "the caller's batch must not be mutated"
    assert seen["stats"].log_mean_probs.shape[:2] == sample["target"].shape
    assert torch.isfinite(loss) and sample_size == sample["ntokens"]
    assert all(p.grad is None for m in task.teachers.members for p in m.parameters())
    assert any(p.grad is not None for p in model.parameters())
    del optimizer

    loss_v, _, _ = task.valid_step(_batch(task), model, criterion)
    assert torch.isfinite(loss_v)


def test_student_builds_and_generates_without_teachers(tiny_data, tmp_path):
    """Generation-time task setup and generation with uncertainty need no --teacher-paths."""
    from argparse import Namespace

    _, task, model = build_task_and_model(tiny_data, ["--task", "translation_distillation",
                                                      "--arch", "prior_transformer_tiny",
                                                      "--uncertainty-output", tmp_path / "u.txt"])
    task.load_dataset("test")
    gen_args = Namespace(beam=2, nbest=2, max_len_a=0, max_len_b=8, min_len=1, unnormalized=False, lenpen=1.0,
                         unkpen=0.0, temperature=1.0, match_source_len=False, no_repeat_ngram_size=0)
    generator = task.build_generator([model.eval()], gen_args)
    sample = _batch(task, "test")
    hypos = task.inference_step(generator, [model], sample)
    task.close_uncertainty_output()
    assert task.teachers is None
    assert len(hypos) == sample["nsentences"] and all(len(h) == 2 for h in hypos)
    assert all("uncertainty" in h for sentence in hypos for h in sentence)
    su_lines = [line for line in (tmp_path / "u.txt").read_text().splitlines() if line.startswith("SU-")]
    assert len(su_lines) == 2 * sample["nsentences"]


def test_student_init_copies_a_teacher_into_the_student(tiny_data, quick_teachers):
    from fairseq import tasks

    cfg = _task_cfg(tiny_data, quick_teachers, "--student-init", quick_teachers[0])
    task = tasks.setup_task(cfg.task)
    student = task.build_model(cfg.model)
    teacher = torch.load(quick_teachers[0], weights_only=True)["model"]
    state = student.state_dict()
    assert sorted(k for k in state if k not in teacher) == [
        "decoder.prior_output_layernorm.bias", "decoder.prior_output_layernorm.weight"]
    # post-norm decoder: the teacher's last LayerNorm affine moved into the new output LayerNorm
    last = f"decoder.layers.{cfg.model.decoder_layers - 1}.final_layer_norm"
    moved = {f"{last}.weight", f"{last}.bias"}
    for key, value in teacher.items():
        if key not in moved:
            torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    torch.testing.assert_close(state["decoder.prior_output_layernorm.weight"], teacher[f"{last}.weight"])
    torch.testing.assert_close(state["decoder.prior_output_layernorm.bias"], teacher[f"{last}.bias"])
    assert bool((state[f"{last}.weight"] == 1).all()) and bool((state[f"{last}.bias"] == 0).all())
    # loading a student checkpoint (generation, resume) builds with from_checkpoint=True: no copy
    other = task.build_model(cfg.model, from_checkpoint=True)
    assert not torch.equal(other.state_dict()["encoder.embed_tokens.weight"], teacher["encoder.embed_tokens.weight"])


def test_student_init_starts_exactly_at_the_teacher(tiny_data, trained_teachers):
    """The same log-probabilities (relative 1e-5: the LayerNorm's eps, see take_over_feature_layernorm_affine)
    and the same beam-search translations as the teacher, before any update."""
    from fairseq import checkpoint_utils, tasks
    from fairseq.sequence_generator import SequenceGenerator

    cfg = _task_cfg(tiny_data, trained_teachers, "--student-init", trained_teachers[0])
    task = tasks.setup_task(cfg.task)
    student = task.build_model(cfg.model).eval()
    (teacher,), _ = checkpoint_utils.load_model_ensemble([str(trained_teachers[0])], task=task)
    teacher.eval()
    task.load_dataset("test")
    itr = task.get_batch_iterator(task.dataset("test"), max_sentences=30, required_batch_size_multiple=1)
    translations = {"student": [], "teacher": []}
    with torch.no_grad():
        for sample in itr.next_epoch_itr(shuffle=False):
            logp_s = student.get_normalized_probs(student(**sample["net_input"]), log_probs=True)
            logp_t = teacher.get_normalized_probs(teacher(**sample["net_input"]), log_probs=True)
            torch.testing.assert_close(logp_s, logp_t, rtol=1e-5, atol=1e-6)
            for name, model in (("student", student), ("teacher", teacher)):
                generator = SequenceGenerator([model], task.target_dictionary, beam_size=4, max_len_a=1.2,
                                              max_len_b=10)
                translations[name] += [h[0]["tokens"].tolist() for h in generator.generate([model], sample)]
    assert len(translations["student"]) == 60
    assert translations["student"] == translations["teacher"]


def test_student_init_rejects_a_checkpoint_that_does_not_fit(tiny_data, quick_teachers, tmp_path):
    from fairseq import tasks

    state = torch.load(quick_teachers[0], weights_only=True)
    w = state["model"]["decoder.embed_tokens.weight"]
    state["model"]["decoder.embed_tokens.weight"] = torch.cat([w, w[:3]])
    state["model"]["decoder.output_projection.weight"] = state["model"]["decoder.embed_tokens.weight"]
    state["model"]["decoder.extra.weight"] = torch.zeros(2)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    task = tasks.setup_task(_task_cfg(tiny_data, quick_teachers, "--student-init", bad).task)
    cfg = _task_cfg(tiny_data, quick_teachers, "--student-init", bad)
    with pytest.raises(TeacherCheckpointError, match=r"not in the student: \['decoder.extra.weight'\].*shapes differ"):
        task.build_model(cfg.model)
    cfg = _task_cfg(tiny_data, quick_teachers, "--student-init", tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="--student-init checkpoint not found"):
        tasks.setup_task(cfg.task).build_model(cfg.model)


def test_student_init_rejects_a_model_of_another_dictionary(tiny_data, quick_teachers, foreign_teacher):
    from fairseq import tasks

    _, foreign = foreign_teacher  # same sizes, other symbols
    cfg = _task_cfg(tiny_data, quick_teachers, "--student-init", foreign)
    with pytest.raises(TeacherCheckpointError, match="dictionary"):
        tasks.setup_task(cfg.task).build_model(cfg.model)
