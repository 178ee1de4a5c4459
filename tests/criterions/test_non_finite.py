"""A non-finite loss (or input of it) stops training in every dtype with a message naming the sentences
(``sample["id"]``) and the statistic that went bad; finite extremes and fp16 gradient overflow do not stop it
(the latter is fairseq's loss scaler's business)."""
import math

import pytest
import torch

from proxy_end2.constants import TEACHER_STATS_KEY
from proxy_end2.criterions.non_finite import NonFiniteLossError
from proxy_end2.uncertainty import EnsembleStatistics

from test_criteria import PAD, STUDENT_LOGITS, FixedLogitsModel, _criterion, _sample

IDS = torch.tensor([17, 42])  # sample ids of the two sentences of the batch


def _batch(**stats_changes):
    sample = _sample()
    sample["id"] = IDS
    stats = sample[TEACHER_STATS_KEY]
    fields = {"log_mean_probs": stats.log_mean_probs.clone(), "mean_log_probs": stats.mean_log_probs.clone(),
              "expected_entropy": stats.expected_entropy.clone()}
    for name, (index, value) in stats_changes.items():
        fields[name][index] = value
    sample[TEACHER_STATS_KEY] = EnsembleStatistics(num_members=stats.num_members, **fields)
    return sample


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("name", ["proxy_dirichlet_distillation", "dirichlet_nll_distillation",
                                  "ensemble_kl_distillation"])
def test_non_finite_student_logits_stop_training_naming_the_sentence(name, bad, dtype):
    logits = STUDENT_LOGITS.clone().to(dtype)
    logits[1, 1, 5] = bad  # sentence 1 (sample id 42), target position 1
    with pytest.raises(NonFiniteLossError) as err:
        _criterion(name)(FixedLogitsModel(logits), _batch())
    message = str(err.value)
    assert "non-finite loss" in message and "sample ids [42]" in message
    assert "first at sample id 42, target position 1" in message
    assert f"student logits (dtype {str(dtype).replace('torch.', '')}) at 1 token(s)" in message
    assert "teacher" not in message.split("Not finite:")[1].split(".")[0]  # the teachers are fine
    assert "lower --lr" in message
    assert isinstance(err.value, FloatingPointError)  # fairseq's trainer saves crash.pt and re-raises


@pytest.mark.parametrize("field, index", [("log_mean_probs", (0, 2, 3)), ("mean_log_probs", (0, 2, 3))])
def test_non_finite_teacher_statistics_name_the_statistic(field, index):
    sample = _batch(**{field: (index, math.nan)})
    with pytest.raises(NonFiniteLossError) as err:
        _criterion("proxy_dirichlet_distillation")(FixedLogitsModel(STUDENT_LOGITS), sample)
    message = str(err.value)
    assert "sample ids [17]" in message and "target position 2" in message
    assert f"teacher statistic {field}" in message
    assert "student logits" not in message and "--teacher-dtype fp32" in message


def test_the_expected_entropy_plays_no_part_in_a_step():
    """The teachers' expected entropy enters no loss and no logged statistic of training: NaN there is harmless."""
    loss, _, _ = _criterion("proxy_dirichlet_distillation")(FixedLogitsModel(STUDENT_LOGITS),
                                                            _batch(expected_entropy=((0, 2), math.nan)))
    assert torch.isfinite(loss)


def test_a_teacher_ruling_a_class_out_entirely_is_named():
    """mean ln p = -inf (a member gave probability 0): EnD^2's loss is infinite; the MKL is infinite."""
    sample = _batch(mean_log_probs=((1, 0, 6), -math.inf))
    with pytest.raises(NonFiniteLossError, match=r"mean_log_probs \(mean ln p\) at 1 token.*teacher MKL"):
        _criterion("dirichlet_nll_distillation")(FixedLogitsModel(STUDENT_LOGITS), sample)


def test_bad_values_at_padding_are_ignored():
    logits = STUDENT_LOGITS.clone()
    logits[1, 2, :] = math.nan  # sentence 1 is padded after 2 tokens
    sample = _batch(mean_log_probs=((1, 2, 0), math.nan))
    assert sample["target"][1, 2] == PAD
    loss, _, log = _criterion("proxy_dirichlet_distillation")(FixedLogitsModel(logits), sample)
    assert torch.isfinite(loss) and math.isfinite(float(log["nll_loss"]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_finite_extremes_do_not_stop_training(dtype):
    """Logits beyond +-80 and at the dtype's largest value are finite inputs: finite loss, no error."""
    logits = STUDENT_LOGITS.clone().to(dtype)
    logits[0, 0, 4] = 85.0
    logits[0, 1, 0] = -90.0
    logits[1, 0, 6] = torch.finfo(dtype).max
    for name in ("proxy_dirichlet_distillation", "dirichlet_nll_distillation", "ensemble_kl_distillation"):
        loss, _, _ = _criterion(name)(FixedLogitsModel(logits), _batch())
        assert torch.isfinite(loss), (name, dtype)


def test_a_minus_inf_logit_only_stops_the_kl_loss():
    """alpha = e^-inf + c = c: the Dirichlet losses are finite; KL(p-bar || q) is infinite where q_k = 0 < p-bar_k,
    and the message blames the student's logits."""
    logits = STUDENT_LOGITS.clone().half()
    logits[1, 1, 0] = -math.inf
    for name in ("proxy_dirichlet_distillation", "dirichlet_nll_distillation"):
        loss, _, _ = _criterion(name)(FixedLogitsModel(logits), _batch())
        assert torch.isfinite(loss), name
    with pytest.raises(NonFiniteLossError, match=r"sample ids \[42\].*student logits \(dtype float16\) at 1 token"):
        _criterion("ensemble_kl_distillation")(FixedLogitsModel(logits), _batch())


def test_fp16_gradient_overflow_is_left_to_the_loss_scaler():
    """A finite loss whose scaled fp16 gradient overflows (the loss scaler's job: skip the step, lower the scale)
    raises nothing in the criterion; the overflow shows up in the gradient only."""
    logits = STUDENT_LOGITS.clone().half()
    logits[0, 0, 4] = 12.0  # EnD^2's gradient ~ e^12 * |ln p| ~ 1e6 x scale: beyond fp16
    model = FixedLogitsModel(logits)
    loss, _, _ = _criterion("dirichlet_nll_distillation")(model, _batch())
    assert torch.isfinite(loss)
    (loss * 2.0**16).backward()  # fairseq's initial fp16 loss scale is 2^7; the dynamic scaler grows it
    assert not torch.isfinite(model.logits.grad).all()


def test_a_non_finite_loss_on_finite_inputs_is_reported_as_a_bug(monkeypatch):
    crit = _criterion("ensemble_kl_distillation")
    monkeypatch.setattr(crit, "token_losses", lambda model, logits, stats: torch.full(logits.shape[:1], math.nan,
                                                                                       dtype=torch.float64))
    with pytest.raises(NonFiniteLossError, match=r"sample ids \[17, 42\].*the loss at 5 token\(s\).*numerical bug"):
        crit(FixedLogitsModel(STUDENT_LOGITS), _batch())


def test_without_sample_ids_batch_rows_are_named():
    logits = STUDENT_LOGITS.clone()
    logits[0, 1, 2] = math.nan
    sample = _batch()
    del sample["id"]
    with pytest.raises(NonFiniteLossError, match=r"sample ids \[0\] \(first at batch row 0, target position 1\)"):
        _criterion("ensemble_kl_distillation")(FixedLogitsModel(logits), sample)
