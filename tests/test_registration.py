"""Importing the plugin registers every component and allowlists exactly what fairseq checkpoints need."""
import argparse
import importlib.metadata
import pickle
import subprocess
import sys

import pytest
import torch

import proxy_end2
from fairseq import utils
from fairseq.tasks import TASK_REGISTRY

from conftest import USER_DIR

NAMES = {
    "model": ["prior_transformer", "prior_s2t_transformer"],
    "arch": ["prior_transformer_tiny", "prior_transformer", "prior_transformer_wmt_en_de",
             "prior_transformer_wmt_en_de_big", "prior_s2t_transformer_xs", "prior_s2t_transformer_s",
             "prior_s2t_transformer_m"],
    "criterion": ["proxy_dirichlet_distillation", "forward_proxy_dirichlet_distillation", "dirichlet_nll_distillation",
                  "ensemble_kl_distillation"],
    "task": ["translation_distillation", "speech_to_text_distillation"],
}


_FRESH_PROCESS = """
import sys
from fairseq import options
from fairseq.criterions import CRITERION_REGISTRY
from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY
from fairseq.tasks import TASK_REGISTRY
assert "proxy_end2" not in sys.modules
options.parse_args_and_arch(options.get_training_parser(), ["data", "--user-dir", sys.argv[1], "--task", "translation",
                                                           "--arch", "transformer_tiny"])
registries = {"model": MODEL_REGISTRY, "arch": ARCH_MODEL_REGISTRY, "criterion": CRITERION_REGISTRY,
              "task": TASK_REGISTRY}
for kind, names in %r.items():
    for name in names:
        print(kind, name, registries[kind][name].__module__ if name in registries[kind] else "MISSING")
"""


def test_user_dir_registers_every_component_in_a_fresh_fairseq_process():
    """What fairseq-train/-generate do with ``--user-dir proxy_end2``, in a new interpreter (the test process has
    the plugin registered already): every name is registered, by a module of the plugin."""
    proc = subprocess.run([sys.executable, "-c", _FRESH_PROCESS % (NAMES,), USER_DIR], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [line.split() for line in proc.stdout.splitlines()]
    assert len(seen) == sum(len(names) for names in NAMES.values())
    for kind, name, module in seen:
        assert module.startswith("proxy_end2."), (kind, name, module)


def test_user_dir_import_is_idempotent():
    utils.import_user_module(argparse.Namespace(user_dir=USER_DIR))
    utils.import_user_module(argparse.Namespace(user_dir=USER_DIR))
    assert TASK_REGISTRY["translation_distillation"].__module__ == "proxy_end2.tasks.translation_distillation"


def test_safe_loader_accepts_fairseq_config_objects(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"args": argparse.Namespace(arch="transformer", lr=[0.1]), "model": {"w": torch.ones(2)}}, path)
    state = torch.load(path)  # torch's default: weights_only=True
    assert state["args"].arch == "transformer"


class _Payload:
    """Anything outside the allowlist: unpickling it could run code."""


def test_safe_loader_is_still_on(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(path)


def test_version_is_the_installed_distribution_version():
    assert proxy_end2.__version__ == importlib.metadata.version("proxy_end2")
