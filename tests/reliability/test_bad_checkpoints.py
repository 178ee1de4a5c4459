"""Checkpoints that cannot serve fail with a clear error naming the file before any work, and nothing on disk
changes: teachers whose output sizes differ, a teacher that returns no logits (adaptive softmax), a model of the
other input kind (speech vs text) as teacher, --student-init or fairseq-generate --path, and a checkpoint to
resume from that was trained with another architecture."""
import copy
import logging
import os

import pytest
import torch
from torch import nn

from conftest import SRC, TGT, USER_DIR
from fairseq_helpers import build_task_and_model

from proxy_end2.checkpoints import CheckpointError, TeacherCheckpointError, check_teacher_dictionaries
from proxy_end2.teachers import check_teacher_output

DISTIL = ["--task", "translation_distillation", "--arch", "prior_transformer_tiny"]


def _save(state: dict, path) -> str:
    torch.save(state, path)
    return str(path)


@pytest.fixture
def teacher_state(quick_teachers):
    return torch.load(quick_teachers[0], map_location="cpu", weights_only=True)


@pytest.fixture
def bigger_vocabulary(teacher_state, tmp_path) -> str:
    """A teacher predicting 3 more classes than the task's dictionary has (its dictionary file unreadable)."""
    state = copy.deepcopy(teacher_state)
    weight = state["model"]["decoder.embed_tokens.weight"]
    state["model"]["decoder.embed_tokens.weight"] = torch.cat([weight, weight[:3]])
    state["model"]["decoder.output_projection.weight"] = state["model"]["decoder.embed_tokens.weight"]
    state["cfg"]["task"]["data"] = str(tmp_path / "gone")
    return _save(state, tmp_path / "bigger.pt")


@pytest.fixture
def speech_like(teacher_state, tmp_path) -> str:
    """A fairseq checkpoint of a model without source-token embeddings (as a speech model is), task
    speech_to_text: given to a translation task."""
    state = copy.deepcopy(teacher_state)
    state["model"]["encoder.subsample.conv_layers.0.weight"] = state["model"].pop("encoder.embed_tokens.weight")
    state["cfg"]["task"]["_name"] = "speech_to_text"
    return _save(state, tmp_path / "speech_model.pt")


def test_teachers_whose_output_sizes_differ_fail_before_the_first_is_loaded(tiny_data, quick_teachers,
                                                                            bigger_vocabulary, caplog):
    _, task, _ = build_task_and_model(tiny_data,
                                      DISTIL + ["--teacher-paths", f"{quick_teachers[0]}:{bigger_vocabulary}"])
    with caplog.at_level(logging.INFO), pytest.raises(TeacherCheckpointError) as exc_info:
        task.load_teachers()
    assert f"{bigger_vocabulary} predicts {len(task.target_dictionary) + 3} target classes" in str(exc_info.value)
    assert f"dictionary has {len(task.target_dictionary)} symbols" in str(exc_info.value)
    assert task.teachers is None and "loaded teacher" not in caplog.text


def test_a_teacher_must_return_logits_over_the_target_classes(tiny_data):
    _, task, model = build_task_and_model(tiny_data, ["--task", "translation", "--arch", "transformer_tiny",
                                                      "--adaptive-softmax-cutoff", "10,20"])
    with pytest.raises(TeacherCheckpointError, match="t.pt has an adaptive softmax: its decoder returns hidden"):
        check_teacher_output(model, "t.pt", len(task.target_dictionary))
    _, task, model = build_task_and_model(tiny_data, ["--task", "translation", "--arch", "transformer_tiny"])
    check_teacher_output(model, "t.pt", len(task.target_dictionary))
    model.decoder.output_projection = nn.Linear(model.decoder.output_embed_dim, 7, bias=False)
    classes = len(task.target_dictionary)
    with pytest.raises(TeacherCheckpointError, match=f"t.pt outputs 7 classes but .* has {classes}"):
        check_teacher_output(model, "t.pt", len(task.target_dictionary))


def test_a_model_of_the_other_input_kind_is_refused_on_every_path(tiny_data, quick_teachers, speech_like,
                                                                 teacher_state):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    expected = f"{speech_like} has no source-token embeddings (task speech_to_text"
    _, task, _ = build_task_and_model(tiny_data, DISTIL + ["--teacher-paths", f"{quick_teachers[0]}:{speech_like}"])
    with pytest.raises(TeacherCheckpointError, match=expected.replace("(", r"\(")):
        task.load_teachers()
    with pytest.raises(TeacherCheckpointError, match=r"--student-init .*speech_model.pt does not fit the student \(not "
                                                     r"in the model: \['encoder.subsample.conv_layers.0.weight'\]"):
        build_task_and_model(tiny_data, DISTIL + ["--student-init", speech_like])
    args = options.parse_args_and_arch(options.get_generation_parser(), [
        str(tiny_data), "--user-dir", USER_DIR, "-s", SRC, "-t", TGT, "--cpu", "--task", "translation_distillation",
        "--path", speech_like])
    with pytest.raises(TeacherCheckpointError, match=r"model checkpoint \(--path\) .*has no source-token embeddings"):
        tasks.setup_task(convert_namespace_to_omegaconf(args).task)
    # the converse: a translation model given to a task that reads speech (no source dictionary)
    with pytest.raises(TeacherCheckpointError, match="is a model of source text .* reads speech features"):
        check_teacher_dictionaries("mt.pt", teacher_state, None, task.target_dictionary)


def test_resuming_with_another_architecture_fails_before_the_teachers_load(tiny_data, quick_teachers, tmp_path):
    """A save dir holding a checkpoint of another architecture (here a plain Transformer teacher's): the error
    names the file, its architecture and the first mismatches; the file is left as it was."""
    save_dir = tmp_path / "student"
    save_dir.mkdir()
    last = save_dir / "checkpoint_last.pt"
    last.write_bytes(quick_teachers[0].read_bytes())
    before = last.read_bytes()
    with pytest.raises(CheckpointError) as exc_info:
        build_task_and_model(tiny_data, DISTIL + ["--save-dir", save_dir, "--teacher-paths", quick_teachers[0],
                                                  "--encoder-layers", "1"])
    message = str(exc_info.value)
    assert f"checkpoint to resume from {last} is a model of architecture transformer_tiny (task translation)" in message
    assert "not in the checkpoint" in message and "another --save-dir" in message
    assert last.read_bytes() == before and os.listdir(save_dir) == ["checkpoint_last.pt"]


@pytest.mark.parametrize("kind, message", [
    ("missing", "teacher checkpoint (--teacher-paths) not found: {path}"),
    ("folder", "teacher checkpoint (--teacher-paths) {path} is not a file"),
    ("empty", "{path} is not a complete torch checkpoint (empty"),
    ("cut_short", "{path} is not a complete torch checkpoint ("),
    ("text", "{path} is not a complete torch checkpoint ("),
    ("not_fairseq", "{path} is not a fairseq checkpoint (no 'model' state"),
])
def test_a_teacher_file_that_is_no_checkpoint_fails_before_any_teacher_is_loaded(tiny_data, quick_teachers, tmp_path,
                                                                                 caplog, kind, message):
    path = tmp_path / f"{kind}.pt"
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "cut_short":
        data = quick_teachers[1].read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "text":
        path.write_text("model weights are on the shared drive\n")
    elif kind == "not_fairseq":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    before = path.read_bytes() if path.is_file() else None
    _, task, _ = build_task_and_model(tiny_data, DISTIL + ["--teacher-paths", f"{quick_teachers[0]}:{path}"])
    with caplog.at_level(logging.INFO), pytest.raises((FileNotFoundError, CheckpointError)) as exc_info:
        task.load_teachers()
    assert message.format(path=path) in str(exc_info.value)
    assert task.teachers is None and "loaded teacher" not in caplog.text
    assert (path.read_bytes() if path.is_file() else None) == before
