"""Run ``fairseq-train`` (``fairseq_cli.train.cli_main``) with test instrumentation chosen by environment
variables: a report of where the teachers are on every rank, and deterministic crashes (a real SIGKILL of the
process) at a given update or in the middle of writing a checkpoint. Test code only: the plugin never does this.

    python tests/reliability/fairseq_driver.py DATA --user-dir proxy_end2 ... (fairseq-train's arguments)

Environment:
    DRIVER_REPORT=PREFIX      each rank writes PREFIX.rank<R>.json after its first and its last update: how many
                              teachers the task holds, whether any teacher parameter or module is in the (DDP-
                              wrapped) model, the optimizer or the criterion, and a checksum of the teachers
    DRIVER_KILL_AT_UPDATE=N   SIGKILL when update N+1 starts (N updates done), mid-epoch
    DRIVER_KILL_IN_COPY=N     SIGKILL halfway through fairseq's copy of the update-N save to checkpoint_last.pt
    DRIVER_KILL_IN_WRITE=N    SIGKILL halfway through fairseq's atomic write (<file>.tmp) of the update-N save
"""
import io
import json
import logging
import os
import signal
import sys

from fairseq_cli.train import cli_main  # first: it sets up fairseq's log format

import torch  # noqa: E402
from fairseq.file_io import PathManager  # noqa: E402
from fairseq.trainer import Trainer  # noqa: E402

STATE = {"updates": 0, "reports": 0}


def _kill_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _write_half_and_die(data: bytes, path: str) -> None:
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
    _kill_now()


def _wrappers(model) -> list:
    """Class names from the outermost wrapper of the student down to the model itself."""
    names = [type(model).__name__]
    while hasattr(model, "module"):
        model = model.module
        names.append(type(model).__name__)
    return names


def _teacher_report(trainer: Trainer) -> dict:
    task = trainer.task
    members = task.teachers.members if task.teachers is not None else []
    teacher_params = {id(p) for m in members for p in m.parameters()}
    teacher_modules = {id(m) for t in members for m in t.modules()}
    optimizer_params = {id(p) for group in trainer.optimizer.optimizer.param_groups for p in group["params"]}
    return {
        "rank": torch.distributed.get_rank() if torch.distributed.is_initialized() else 0,
        "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        "num_teachers": len(members),
        "teacher_paths": list(task.teachers.paths) if task.teachers is not None else [],
        "wrappers": _wrappers(trainer.model),
        "teacher_params_in_model": len(teacher_params & {id(p) for p in trainer.model.parameters()}),
        "teacher_modules_in_model": len(teacher_modules & {id(m) for m in trainer.model.modules()}),
        "teacher_params_in_optimizer": len(teacher_params & optimizer_params),
        "teacher_params_in_criterion": len(teacher_params & {id(p) for p in trainer.criterion.parameters()}),
        "teacher_params_requiring_grad": sum(p.requires_grad for m in members for p in m.parameters()),
        "teacher_grads": sum(p.grad is not None for m in members for p in m.parameters()),
        "teacher_checksum": float(sum(p.double().sum() for m in members for p in m.parameters())),
        "teacher_dtypes": sorted({str(p.dtype) for m in members for p in m.parameters()}),
        "student_dtypes": sorted({str(p.dtype) for p in trainer.get_model().parameters()}),
        "num_updates": trainer.get_num_updates(),
    }


def install() -> None:
    report = os.environ.get("DRIVER_REPORT")
    kill_at = int(os.environ.get("DRIVER_KILL_AT_UPDATE", -1))
    kill_in_copy = int(os.environ.get("DRIVER_KILL_IN_COPY", -1))
    kill_in_write = int(os.environ.get("DRIVER_KILL_IN_WRITE", -1))
    train_step = Trainer.train_step

    def instrumented_train_step(self, samples, raise_oom=False):
        if self.get_num_updates() == kill_at:
            _kill_now()
        out = train_step(self, samples, raise_oom)
        STATE["updates"] = self.get_num_updates()
        if report:
            info = _teacher_report(self)
            with open(f"{report}.rank{info['rank']}.json", "a") as f:
                f.write(json.dumps(info) + "\n")
        return out

    Trainer.train_step = instrumented_train_step

    copy = PathManager.copy

    def killing_copy(src_path, dst_path, overwrite=False):
        if STATE["updates"] == kill_in_copy and os.path.basename(dst_path).startswith("checkpoint_last"):
            with open(src_path, "rb") as f:
                _write_half_and_die(f.read(), dst_path)
        return copy(src_path, dst_path, overwrite=overwrite)

    PathManager.copy = staticmethod(killing_copy)
    save = torch.save

    def killing_save(obj, f, *args, **kwargs):
        name = getattr(f, "name", f if isinstance(f, str) else "")
        if STATE["updates"] == kill_in_write and str(name).endswith(".tmp"):
            buffer = io.BytesIO()
            save(obj, buffer, *args, **kwargs)
            _write_half_and_die(buffer.getvalue(), str(name))
        return save(obj, f, *args, **kwargs)

    torch.save = killing_save  # checkpoint_utils calls torch.save through the module


if __name__ == "__main__":
    # fairseq lowers the root logger to WARNING on ranks > 0; keep the plugin's INFO lines (teacher loading)
    logging.getLogger("proxy_end2").setLevel(logging.INFO)
    install()
    sys.argv = ["fairseq-train"] + sys.argv[1:]
    cli_main()
