"""Distillation through fairseq's own distributed training: 2 processes (torch.distributed, gloo, CPU) against
1 process on the same total batch.

fairseq shards the batches over the ranks (batch i goes to rank i mod 2) and sums the gradients; one process
with ``--update-freq 2`` accumulates batches 2u and 2u+1 into update u: the same total batch. With SGD and no
dropout the two runs must take the same steps. They do, to the last bit on this machine (measured: largest
parameter difference 0.0 after 3 updates); the test allows 1e-6 relative, the size of a different summation
order of the two gradients.

CPU specifics (fairseq 0.12): its ``pytorch_ddp`` wrapper passes ``device_ids`` and only works on GPUs, so the
CPU test uses ``--ddp-backend legacy_ddp`` (fairseq's own all-reduce of the gradients); and its launcher spawns
one process per GPU, so on CPU each rank is started by hand with ``--distributed-no-spawn``. The plugin does
not depend on the DDP backend: the teachers live outside the wrapped model.
"""
import subprocess

import pytest

from reliability_helpers import (
    TIMEOUT_S,
    distil_args,
    driver_command,
    driver_env,
    free_port,
    max_abs_difference,
    model_state,
    reports,
    run_driver,
    update_records,
)

pytestmark = pytest.mark.slow

UPDATES = 3
LOGGED = ["loss", "nll_loss", "ppl", "student_alpha0", "ensemble_mkl", "ensemble_precision", "target_precision",
          "wpb", "bsz", "gnorm"]


TRAINING = ["--optimizer", "sgd", "--lr", "0.5", "--dropout", "0", "--max-update", UPDATES, "--seed", "3"]


@pytest.fixture(scope="module")
def runs(tiny_data, quick_teachers, tmp_path_factory):
    """(one-process output, [rank outputs], root) of the same distillation on the same total batches."""
    root = tmp_path_factory.mktemp("distributed")
    single = run_driver(distil_args(tiny_data, quick_teachers, root / "single", *TRAINING, "--update-freq", "2"),
                        root / "single.log", DRIVER_REPORT=root / "single")
    port = free_port()
    distributed = ["--distributed-world-size", 2, "--distributed-init-method", f"tcp://127.0.0.1:{port}",
                   "--distributed-backend", "gloo", "--distributed-no-spawn", "--ddp-backend", "legacy_ddp"]
    procs = [subprocess.Popen(
        driver_command(distil_args(tiny_data, quick_teachers, root / "ddp", *TRAINING, *distributed,
                                   "--distributed-rank", rank)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=driver_env(DRIVER_REPORT=root / "ddp"))
        for rank in (0, 1)]
    outputs = []
    for rank, proc in enumerate(procs):
        out, _ = proc.communicate(timeout=TIMEOUT_S)
        (root / f"rank{rank}.log").write_text(out)
        assert proc.returncode == 0, f"rank {rank} failed:\n{out[-4000:]}"
        outputs.append(out)
    return single, outputs, root


def test_two_processes_take_the_steps_of_one_on_the_same_total_batch(runs):
    single, (rank0, _), root = runs
    one, two = update_records(single), update_records(rank0)
    assert sorted(one) == sorted(two) == list(range(1, UPDATES + 1))
    for update in one:
        # every logged number is the all-reduced one: loss and student NLL, teacher MKL and proxy precision
        # (per-token means over both ranks' tokens), words and sentences per batch, gradient norm
        assert {k: one[update][k] for k in LOGGED} == {k: two[update][k] for k in LOGGED}, update
    difference = max_abs_difference(model_state(root / "single" / "checkpoint_last.pt"),
                                    model_state(root / "ddp" / "checkpoint_last.pt"))
    assert difference <= 1e-6, difference
    assert float(one[1]["gnorm"]) > 0 and one[1]["loss"] != one[UPDATES]["loss"]  # it did train


def test_every_rank_loads_the_teachers_and_none_of_them_is_wrapped_or_trained(runs):
    _, outputs, root = runs
    for rank, out in enumerate(outputs):
        assert "loaded teacher 1/2" in out and "loaded teacher 2/2" in out, rank
        per_update = reports(root / "ddp", rank)
        assert [r["num_updates"] for r in per_update] == list(range(1, UPDATES + 1))
        for report in per_update:
            assert report["rank"] == rank and report["world_size"] == 2
            assert "LegacyDistributedDataParallel" in report["wrappers"]  # the student is DDP-wrapped...
            assert report["num_teachers"] == 2
            for key in ("teacher_params_in_model", "teacher_modules_in_model", "teacher_params_in_optimizer",
                        "teacher_params_in_criterion", "teacher_params_requiring_grad", "teacher_grads"):
                assert report[key] == 0, (rank, key)  # ...the teachers are not
        # the teachers never change, and are the same on both ranks
        assert {r["teacher_checksum"] for r in per_update} == {reports(root / "ddp", 0)[0]["teacher_checksum"]}
    assert reports(root / "single", 0)[0]["wrappers"] == ["PriorTransformerModel"]


def test_nothing_of_the_teachers_is_saved(runs, quick_teachers):
    import torch

    _, _, root = runs
    state = torch.load(root / "ddp" / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    teacher = torch.load(quick_teachers[0], map_location="cpu", weights_only=True)["model"]
    student_keys = set(model_state(root / "single" / "checkpoint_last.pt"))
    assert set(state["model"]) == student_keys
    assert not any("teacher" in key for key in state["model"])
    assert not state.get("criterion")  # the criterion has no parameters (and holds no teacher)
    saved = sum(t.numel() for t in state["model"].values())
    assert saved == sum(t.numel() for t in model_state(root / "single" / "checkpoint_last.pt").values())
    assert saved < 2 * sum(t.numel() for t in teacher.values())  # one model's worth, not three
