"""Distillation with a half-precision student through fairseq's own mixed-precision machinery, and a student
that goes non-finite stopping the run with a message naming the sentences.

What fairseq 0.12 offers, and what is tested where:

* fp16 student, fairseq's dynamic loss scaler: ``--fp16`` (``FP16Optimizer``) needs CUDA; on CPU
  ``--memory-efficient-fp16 --cpu`` runs the same scaler with an fp16 model (tested here). ``--fp16`` on a GPU:
  the GPU-only test below, skipped on machines without one (no GPU was available to this project's CI).
* bf16 student: fairseq 0.12's ``--bf16`` / ``--memory-efficient-bf16`` switch on ``--tpu`` (options.py), so
  fairseq-train cannot train in bf16 on CPU or GPU (tested below). The bf16 path of fairseq's trainer itself
  (bf16 model, fp32 master weights in ``MemoryEfficientFP16Optimizer``) is exercised in-process with the TPU
  flag cleared.
* the teachers keep their own dtype (``--teacher-dtype``, fp32 here) whatever the student's: fairseq casts the
  model it trains, and the teachers are not part of it.
"""
import math
import re

import numpy as np
import pytest
import torch

from conftest import SRC, TGT
from fairseq_helpers import build_cfg
from reliability_helpers import distil_args, model_state, reports, requires_cuda, run_driver, update_records

pytestmark = pytest.mark.slow

UPDATES = 6


TRAINING = ["--optimizer", "adam", "--lr", "0.002", "--dropout", "0", "--max-update", UPDATES, "--seed", "4"]


@pytest.fixture(scope="module")
def fp32_run(tiny_data, quick_teachers, tmp_path_factory):
    root = tmp_path_factory.mktemp("fp32")
    args = distil_args(tiny_data, quick_teachers, root / "run", *TRAINING)
    return update_records(run_driver(args, root / "run.log"))


def _check_half_run(records, reference, report, half_dtype, tolerance):
    assert sorted(records) == list(range(1, UPDATES + 1))
    for update, record in records.items():
        for key in ("loss", "nll_loss", "ensemble_mkl", "target_precision", "gnorm"):
            assert math.isfinite(float(record[key])), (update, key)
        # the teachers run in fp32 either way: their statistics are those of the fp32 run exactly
        assert record["ensemble_mkl"] == reference[update]["ensemble_mkl"]
        assert abs(float(record["loss"]) - float(reference[update]["loss"])) < tolerance, update
    assert report["student_dtypes"] == [half_dtype] and report["teacher_dtypes"] == ["torch.float32"]
    assert report["teacher_params_in_optimizer"] == 0


def test_fp16_student_with_fairseqs_loss_scaler_on_cpu(tiny_data, quick_teachers, fp32_run, tmp_path):
    out = run_driver(distil_args(tiny_data, quick_teachers, tmp_path / "run", *TRAINING, "--memory-efficient-fp16"),
                     tmp_path / "run.log", DRIVER_REPORT=tmp_path / "report")
    records = update_records(out)
    assert all("loss_scale" in record for record in records.values())  # fairseq's dynamic loss scaler is on
    # fp16 rounds the student's weights and activations (11-bit mantissa): largest |loss difference| over the 6
    # updates measured 0.0003 on this project's 2-core CPU machine (printed from this test)
    _check_half_run(records, fp32_run, reports(tmp_path / "report", 0)[-1], "torch.float16", tolerance=0.01)
    assert all(torch.isfinite(t).all() for t in model_state(tmp_path / "run" / "checkpoint_last.pt").values())


@requires_cuda
def test_fp16_student_on_a_gpu(tiny_data, quick_teachers, tmp_path):  # pragma: no cover - needs CUDA
    args = [a for a in distil_args(tiny_data, quick_teachers, tmp_path / "run", *TRAINING, "--fp16") if a != "--cpu"]
    records = update_records(run_driver(args, tmp_path / "run.log", DRIVER_REPORT=tmp_path / "report"))
    assert sorted(records) == list(range(1, UPDATES + 1))
    assert all(math.isfinite(float(r["loss"])) for r in records.values())
    assert reports(tmp_path / "report", 0)[-1]["student_dtypes"] == ["torch.float16"]


def test_fairseq_012_bf16_flag_means_tpu(tiny_data):
    """Why the bf16 test below runs in-process: fairseq-train --bf16 turns on --tpu (then fails without torch_xla)."""
    cfg = build_cfg(tiny_data, ["--task", "translation_distillation", "--arch", "prior_transformer_tiny",
                                "--bf16"])
    assert cfg.common.bf16 and cfg.common.tpu


def test_bf16_student_through_fairseqs_trainer(tiny_data, quick_teachers, fp32_run):
    from omegaconf import open_dict

    from fairseq import tasks, utils
    from fairseq.logging import metrics
    from fairseq.trainer import Trainer

    cfg = build_cfg(tiny_data, ["--task", "translation_distillation", "--arch", "prior_transformer_tiny",
                                "--criterion", "proxy_dirichlet_distillation",
                                "--teacher-paths", ":".join(map(str, quick_teachers)), "--optimizer", "adam",
                                "--lr", "0.002", "--dropout", "0", "--max-tokens", "256", "--seed", "4",
                                "--memory-efficient-bf16"])
    with open_dict(cfg):
        cfg.common.tpu = False  # see test_fairseq_012_bf16_flag_means_tpu
    np.random.seed(cfg.common.seed)  # as fairseq-train seeds before it builds the model: the fp32 run's weights
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    trainer = Trainer(cfg, task, task.build_model(cfg.model), task.build_criterion(cfg.criterion))
    batches = trainer.get_train_iterator(epoch=1).next_epoch_itr(shuffle=True)
    records = {}
    for update, sample in zip(range(1, UPDATES + 1), batches):
        with metrics.aggregate(new_root=True) as agg:
            trainer.train_step([sample])
        records[update] = {k: f"{v:g}" for k, v in agg.get_smoothed_values().items()}
    assert {str(p.dtype) for p in trainer.get_model().parameters()} == {"torch.bfloat16"}
    assert {p.dtype for m in task.teachers.members for p in m.parameters()} == {torch.float32}
    for update, record in records.items():
        assert all(math.isfinite(float(record[k])) for k in ("loss", "nll_loss", "ensemble_mkl", "gnorm")), update
        # bf16 keeps 8 bits of mantissa: from the fp32 run's initial weights (same seed), the largest |loss
        # difference| to the fp32 run over the 6 updates measured 0.0008 on this project's 2-core CPU machine
        # (printed from this test, twice, in different test orders)
        assert abs(float(record["loss"]) - float(fp32_run[update]["loss"])) < 0.01, update
        assert float(record["ensemble_mkl"]) == pytest.approx(float(fp32_run[update]["ensemble_mkl"]), abs=1e-4)


def test_a_student_gone_non_finite_stops_training_naming_the_sentences(tiny_data, quick_teachers, tmp_path):
    """--student-init from a checkpoint with one NaN source-word embedding: exactly the sentences containing that
    word get NaN logits. fairseq-train stops at the first update with the criterion's message, naming them."""
    from fairseq import tasks

    state = torch.load(quick_teachers[0], map_location="cpu", weights_only=True)
    cfg = build_cfg(tiny_data, ["--task", "translation_distillation", "--arch", "prior_transformer_tiny"])
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    word = task.source_dictionary.index(task.source_dictionary.symbols[10])
    state["model"]["encoder.embed_tokens.weight"][word] = math.nan
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    args = distil_args(tiny_data, quick_teachers, tmp_path / "run", *TRAINING, "--student-init", broken,
                       "--share-decoder-input-output-embed")
    out = run_driver(args, tmp_path / "run.log", expect_rc=1)
    match = re.search(r"NonFiniteLossError: .*non-finite loss.* sample ids \[([0-9, ]+)\]", out)
    assert match, out[-3000:]
    ids = [int(i) for i in match.group(1).split(",")]
    assert ids and all(word in task.dataset("train").src[i].tolist() for i in ids)
    assert "Not finite: student logits (dtype float32)" in out and "| train_inner |" not in out  # no update made
    assert not (tmp_path / "run" / "checkpoint_last.pt").exists()
