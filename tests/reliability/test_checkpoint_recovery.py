"""proxy_end2.checkpoint_recovery on small files (no training): which file fairseq-train resumes from, what is
repaired, what is refused, and that nothing is ever deleted. The real kills are test_resume_after_kill.py."""
import os
import time

import pytest
import torch

from proxy_end2.checkpoint_recovery import DamagedCheckpointError, prepare_resume, resume_checkpoint_path
from proxy_end2.safe_loading import UnsafeCheckpointError, checkpoint_format


def _save(path, updates: int):
    torch.save({"model": {"w": torch.full((3,), float(updates))},
                "optimizer_history": [{"num_updates": updates}]}, path)
    return path


def _cut(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data[: len(data) // 2]


@pytest.fixture
def save_dir(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    _save(folder / "checkpoint_1_4.pt", 4)
    os.utime(folder / "checkpoint_1_4.pt", (time.time() - 100, time.time() - 100))
    _save(folder / "checkpoint_1_8.pt", 8)
    _save(folder / "checkpoint_last.pt", 8)
    return folder


def test_a_fresh_start_and_an_intact_file_are_left_alone(save_dir, tmp_path):
    assert prepare_resume(str(tmp_path / "new")) is None
    before = {p.name: p.read_bytes() for p in save_dir.iterdir()}
    assert prepare_resume(str(save_dir)) == str(save_dir / "checkpoint_last.pt")
    assert {p.name: p.read_bytes() for p in save_dir.iterdir()} == before


def test_the_file_fairseq_resumes_from(save_dir, tmp_path):
    assert resume_checkpoint_path(str(save_dir)) == str(save_dir / "checkpoint_last.pt")
    assert resume_checkpoint_path(str(save_dir), suffix="-shard0") is None  # checkpoint_last-shard0.pt absent
    other = _save(tmp_path / "other.pt", 2)
    assert resume_checkpoint_path(str(save_dir), restore_file=str(other)) == str(other)
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert resume_checkpoint_path(str(empty), finetune_from_model=str(other)) == str(other)


def test_a_cut_short_last_checkpoint_is_kept_aside_and_replaced_by_the_newest_intact_one(save_dir, caplog):
    cut = _cut(save_dir / "checkpoint_last.pt")
    assert checkpoint_format(str(save_dir / "checkpoint_last.pt")) == "unknown"
    prepare_resume(str(save_dir))
    assert (save_dir / "checkpoint_last.pt.damaged").read_bytes() == cut  # nothing lost
    assert (save_dir / "checkpoint_last.pt").read_bytes() == (save_dir / "checkpoint_1_8.pt").read_bytes()
    assert "checkpoint_1_8.pt (update 8)" in caplog.text
    _cut(save_dir / "checkpoint_last.pt")  # again: the first .damaged is kept too
    prepare_resume(str(save_dir))
    assert (save_dir / "checkpoint_last.pt.damaged").read_bytes() == cut
    assert (save_dir / "checkpoint_last.pt.damaged.1").exists()
    assert not list(save_dir.glob("*.restoring"))


def test_other_ranks_only_check(save_dir):
    cut = _cut(save_dir / "checkpoint_last.pt")
    prepare_resume(str(save_dir), repair=False)
    assert (save_dir / "checkpoint_last.pt").read_bytes() == cut
    assert not (save_dir / "checkpoint_last.pt.damaged").exists()


def test_what_cannot_be_repaired_is_a_clear_error_and_changes_nothing(save_dir, tmp_path):
    chosen = _save(tmp_path / "chosen.pt", 3)
    _cut(chosen)
    with pytest.raises(DamagedCheckpointError, match=f"{chosen} is not a complete torch checkpoint.*--restore-file"):
        prepare_resume(str(save_dir), restore_file=str(chosen))
    alone = tmp_path / "alone"
    alone.mkdir()
    cut = _cut(_save(alone / "checkpoint_last.pt", 1))
    with pytest.raises(DamagedCheckpointError, match=rf"no intact checkpoint\*\.pt in {alone} to resume from instead"):
        prepare_resume(str(alone))
    assert [p.name for p in alone.iterdir()] == ["checkpoint_last.pt"]
    assert (alone / "checkpoint_last.pt").read_bytes() == cut


def test_an_unsafe_checkpoint_is_refused_not_repaired(save_dir):
    state = {"model": {}, "payload": os.system}  # the pickle would import posix.system
    torch.save(state, save_dir / "checkpoint_last.pt")
    with pytest.raises(UnsafeCheckpointError, match="checkpoint to resume from .*posix.system"):
        prepare_resume(str(save_dir))
    assert not (save_dir / "checkpoint_last.pt.damaged").exists()
