"""A crafted checkpoint whose pickle would run code is refused, naming the file, on every path that loads one:
teachers (--teacher-paths), --student-init, the checkpoint fairseq-train resumes from, fairseq-generate's --path.
The crafted file is a real fairseq checkpoint plus one object whose unpickling would create a marker file: the
marker never appears, so nothing in it ran."""
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import SRC, TGT, USER_DIR, run_fairseq
from fairseq_helpers import build_cfg, build_task_and_model

from proxy_end2.checkpoints import CheckpointError
from proxy_end2.safe_loading import UnsafeCheckpointError


class RunsCode:
    """Unpickling this calls ``os.system`` (a GLOBAL of module ``posix``) to create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def crafted(quick_teachers, tmp_path):
    """(path of a crafted checkpoint, marker that its pickle would create)."""
    marker = tmp_path / "code_ran"
    state = torch.load(quick_teachers[0], map_location="cpu", weights_only=True)
    state["extra_state"]["payload"] = RunsCode(marker)
    path = tmp_path / "crafted" / "checkpoint_last.pt"
    path.parent.mkdir()
    torch.save(state, path)
    return path, marker


def refused(exc_info, path: Path, marker: Path) -> None:
    message = str(exc_info.value)
    assert str(path) in message and "posix.system" in message and "arbitrary code" in message, message
    assert not marker.exists()


def test_teacher(tiny_data, quick_teachers, crafted):
    path, marker = crafted
    _, task, _ = build_task_and_model(tiny_data, ["--task", "translation_distillation", "--arch",
                                                  "prior_transformer_tiny", "--teacher-paths",
                                                  f"{quick_teachers[0]}:{path}"])
    with pytest.raises(UnsafeCheckpointError) as exc_info:
        task.load_teachers()
    refused(exc_info, path, marker)
    assert task.teachers is None  # checked before the first teacher was loaded


def test_student_init(tiny_data, crafted):
    path, marker = crafted
    with pytest.raises(UnsafeCheckpointError) as exc_info:
        build_task_and_model(tiny_data, ["--task", "translation_distillation", "--arch", "prior_transformer_tiny",
                                         "--student-init", path])
    refused(exc_info, path, marker)


def test_resume(tiny_data, crafted, tmp_path):
    """fairseq-train would resume from SAVE_DIR/checkpoint_last.pt: checked when the task builds the student."""
    path, marker = crafted
    before = path.read_bytes()
    with pytest.raises(UnsafeCheckpointError) as exc_info:
        build_task_and_model(tiny_data, ["--task", "translation_distillation", "--arch", "prior_transformer_tiny",
                                         "--save-dir", path.parent])
    refused(exc_info, path, marker)
    assert path.read_bytes() == before and sorted(os.listdir(path.parent)) == ["checkpoint_last.pt"]
    restore = tmp_path / "elsewhere.pt"
    shutil.copyfile(path, restore)
    with pytest.raises(UnsafeCheckpointError) as exc_info:  # --restore-file FILE
        build_task_and_model(tiny_data, ["--task", "translation_distillation", "--arch", "prior_transformer_tiny",
                                         "--save-dir", tmp_path / "new", "--restore-file", restore])
    refused(exc_info, restore, marker)


def test_generate_path_in_process(tiny_data, quick_teachers, crafted):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    path, marker = crafted
    args = options.parse_args_and_arch(options.get_generation_parser(), [
        str(tiny_data), "--user-dir", USER_DIR, "-s", SRC, "-t", TGT, "--cpu", "--task", "translation_distillation",
        "--path", f"{quick_teachers[1]}:{path}"])
    with pytest.raises(UnsafeCheckpointError) as exc_info:
        tasks.setup_task(convert_namespace_to_omegaconf(args).task)
    refused(exc_info, path, marker)


@pytest.mark.slow
def test_fairseq_generate_refuses_it(tiny_data, crafted, tmp_path):
    """The real command: fails before any model is loaded, the message names the file."""
    path, marker = crafted
    with pytest.raises(AssertionError, match="fairseq-generate failed"):
        run_fairseq("generate", [tiny_data, "--user-dir", USER_DIR, "--task", "translation_distillation", "-s", SRC,
                                 "-t", TGT, "--path", path, "--cpu", "--beam", "2", "--max-sentences", "8"],
                    tmp_path / "generate.log")
    log = (tmp_path / "generate.log").read_text()
    assert "UnsafeCheckpointError" in log and f"model checkpoint (--path) {path} is refused" in log, log[-3000:]
    assert "posix.system" in log and not marker.exists()
    assert "H-" not in log  # nothing generated


def test_a_checkpoint_that_is_not_a_fairseq_one_is_named(tiny_data, tmp_path):
    """Complete and safe, but no model state: a clear error naming the file (not fairseq's KeyError)."""
    path = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=f"--student-init checkpoint {path} is not a fairseq checkpoint"):
        build_task_and_model(tiny_data, ["--task", "translation_distillation", "--arch", "prior_transformer_tiny",
                                         "--student-init", path])
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match=f"{text} is not a complete torch checkpoint"):
        build_task_and_model(tiny_data, ["--task", "translation_distillation", "--arch", "prior_transformer_tiny",
                                         "--student-init", text])
