"""A distillation run killed with SIGKILL, three times (mid-epoch between saves; during fairseq's atomic write of
a checkpoint; during fairseq's copy of the save to checkpoint_last.pt), resumed each time with the same command,
ends where an uninterrupted run of the same seed ends.

fairseq restores the model, the optimizer, the learning-rate schedule, the position in the epoch and (through
its per-update seed) the dropout masks; the teachers are reloaded from their files. Measured on this machine:
the final parameters and every logged number of every update are bit-identical, so the test asserts equality of
the logs and a parameter difference of at most 1e-6 (allowing a different reduction order on other hardware).

The copy to checkpoint_last.pt is not atomic in fairseq 0.12 (``PathManager.copy`` = ``shutil.copyfile``):
the test shows the cut-short file a kill leaves there, and that the plugin repairs it on resume
(``proxy_end2.checkpoint_recovery``: the damaged file is kept as ``checkpoint_last.pt.damaged``, the newest
intact checkpoint takes its place).
"""
import pytest

from proxy_end2.safe_loading import checkpoint_format
from reliability_helpers import distil_args, max_abs_difference, model_state, num_updates, run_driver, update_records

pytestmark = pytest.mark.slow

UPDATES = 12
SAVE_EVERY = 4


def _args(tiny_data, teachers, save_dir):
    # adam and dropout: optimizer state and random masks must both be restored for the runs to agree
    return distil_args(tiny_data, teachers, save_dir, "--optimizer", "adam", "--lr", "0.003", "--dropout", "0.1",
                       "--max-update", UPDATES, "--save-interval-updates", SAVE_EVERY, "--seed", "5")


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, quick_teachers, tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    return run_driver(_args(tiny_data, quick_teachers, root / "run"), root / "run.log"), root / "run"


@pytest.fixture(scope="module")
def interrupted(tiny_data, quick_teachers, tmp_path_factory):
    """Four invocations of the same command; what each left behind is recorded after it."""
    root = tmp_path_factory.mktemp("interrupted")
    save_dir, args = root / "run", _args(tiny_data, quick_teachers, root / "run")
    stages, logs = {}, []

    def invoke(name, expect_rc, **kill):
        logs.append(run_driver(args, root / f"{name}.log", expect_rc=expect_rc, **kill))
        stages[name] = {p.name: checkpoint_format(str(p)) for p in sorted(save_dir.iterdir())}

    invoke("killed_mid_epoch", -9, DRIVER_KILL_AT_UPDATE=6)  # after update 6; saved at 4
    invoke("killed_in_atomic_write", -9, DRIVER_KILL_IN_WRITE=8)  # resumed from 4, killed writing the save of 8
    invoke("killed_in_copy", -9, DRIVER_KILL_IN_COPY=8)  # resumed from 4, killed copying the save of 8 to last
    invoke("resumed", 0)  # repairs checkpoint_last.pt, resumes from 8, ends at 12
    return stages, logs, save_dir


def test_what_each_kill_leaves_behind(interrupted):
    stages, _, _ = interrupted
    assert stages["killed_mid_epoch"] == {"checkpoint_1_4.pt": "zip", "checkpoint_last.pt": "zip"}
    # the atomic write: a partial .tmp, the previous checkpoint_last.pt intact
    assert stages["killed_in_atomic_write"] == {"checkpoint_1_4.pt": "zip", "checkpoint_1_8.pt.tmp": "unknown",
                                                "checkpoint_last.pt": "zip"}
    # fairseq's non-atomic copy: the save of update 8 is intact, checkpoint_last.pt is cut short
    assert stages["killed_in_copy"] == {"checkpoint_1_4.pt": "zip", "checkpoint_1_8.pt": "zip",
                                        "checkpoint_last.pt": "unknown"}
    assert stages["resumed"] == {"checkpoint_1_12.pt": "zip", "checkpoint_1_4.pt": "zip", "checkpoint_1_8.pt": "zip",
                                 "checkpoint_last.pt": "zip", "checkpoint_last.pt.damaged": "unknown"}


def test_each_resume_starts_from_the_last_intact_save(interrupted):
    _, logs, save_dir = interrupted
    firsts = [min(update_records(log)) for log in logs]
    assert firsts == [1, 5, 5, 9]  # after the kills at 6, in the write of 8 (last is 4), in the copy of 8 (repaired)
    assert "checkpoint_last.pt.damaged" in logs[-1] and "checkpoint_1_8.pt (update 8)" in logs[-1]
    assert num_updates(save_dir / "checkpoint_last.pt") == UPDATES


def test_the_resumed_run_ends_where_the_uninterrupted_run_ends(interrupted, uninterrupted):
    _, logs, save_dir = interrupted
    reference_log, reference_dir = uninterrupted
    reference, resumed = update_records(reference_log), update_records(*logs)
    assert sorted(reference) == sorted(resumed) == list(range(1, UPDATES + 1))
    keys = ["loss", "nll_loss", "ensemble_mkl", "target_precision", "gnorm", "lr", "wpb", "bsz"]
    for update in reference:  # the updates redone after each resume included
        assert {k: reference[update][k] for k in keys} == {k: resumed[update][k] for k in keys}, update
    difference = max_abs_difference(model_state(reference_dir / "checkpoint_last.pt"),
                                    model_state(save_dir / "checkpoint_last.pt"))
    assert difference <= 1e-6, difference
