"""The main job refuses an output folder it cannot use before doing any work, and changes nothing on disk:
an unwritable place, a file in the way, another program's non-empty folder, an earlier run with other settings."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from conftest import SYNTHETIC_EXAMPLE
from config import MainJobConfig
from output_folder import OutputFolderError, check_output_folder

NOBODY = 65534


def snapshot(folder: Path) -> dict:
    """Every path under ``folder`` with its bytes (files) or None (folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def run_main_job(out: Path, as_user: int = None) -> subprocess.CompletedProcess:
    prefix = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups"] if as_user is not None else []
    return subprocess.run([*prefix, sys.executable, str(SYNTHETIC_EXAMPLE / "main_job.py"), "--out", str(out)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)


def test_a_foreign_non_empty_folder_is_refused_and_left_as_it_was(tmp_path):
    out = tmp_path / "my_experiments"
    (out / "old").mkdir(parents=True)
    (out / "notes.txt").write_text("do not lose me\n")
    (out / "old" / "model.pt").write_bytes(b"\x00" * 10)
    before = snapshot(out)
    proc = run_main_job(out)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"main_job.py: error: --out {out} is not empty and is not the output of an earlier run" in proc.stderr
    assert snapshot(out) == before  # not even config.json was written


@pytest.fixture
def reachable_tmp():
    """A temporary folder that any user may enter (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="proxy_end2_out_"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None,
                    reason="running as root, and no setpriv (util-linux) to run the job as an unprivileged user")
@pytest.mark.parametrize("where", ["in_a_read_only_folder", "below_a_private_folder"])
def test_an_unwritable_place_is_refused_before_anything_is_written(reachable_tmp, where):
    """A real permission denial: the job runs as an unprivileged user where it may not write (root may write
    anywhere, so under root the job is run as the user 'nobody' with setpriv)."""
    locked = reachable_tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555 if where == "in_a_read_only_folder" else 0o700)
    out = locked / "run" if where == "in_a_read_only_folder" else locked / "deeper" / "run"
    proc = run_main_job(out, as_user=NOBODY if os.geteuid() == 0 else None)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"main_job.py: error: --out {out}: cannot write in {locked} (permissions" in proc.stderr
    assert list(locked.iterdir()) == []


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(OutputFolderError, match="exists and is not a folder"):
        check_output_folder(MainJobConfig(out=str(tmp_path / "run")))
    with pytest.raises(OutputFolderError, match="cannot write in"):
        check_output_folder(MainJobConfig(out=str(tmp_path / "run" / "below")))


def test_an_earlier_run_resumes_only_with_the_same_settings(tmp_path):
    cfg = MainJobConfig(out=str(tmp_path / "run"))
    check_output_folder(cfg)  # a new folder
    Path(cfg.out).mkdir()
    check_output_folder(cfg)  # an empty one
    (Path(cfg.out) / "config.json").write_text(json.dumps(asdict(cfg)))
    (Path(cfg.out) / "logs").mkdir()
    check_output_folder(replace(cfg, jobs=1, threads=2))  # resumable: these change no result
    with pytest.raises(OutputFolderError, match=r"other settings \(--train-size: 6000 there, 100 now; "
                                                r"--vocab-size: 1700 there, 50 now\)"):
        check_output_folder(replace(cfg, train_size=100, vocab_size=50))
    (Path(cfg.out) / "config.json").write_text("{cut")
    with pytest.raises(OutputFolderError, match="config.json is unreadable"):
        check_output_folder(cfg)
