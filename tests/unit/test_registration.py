"""Importing the plugin registers every component and allowlists exactly what fairseq checkpoints need."""
import argparse
import pickle

import pytest
import torch

import proxy_end2
from fairseq import utils
from fairseq.criterions import CRITERION_REGISTRY
from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY
from fairseq.tasks import TASK_REGISTRY

from conftest import USER_DIR

NAMES = {
    "model": ["prior_transformer"],
    "arch": ["prior_transformer_tiny", "prior_transformer", "prior_transformer_wmt_en_de",
             "prior_transformer_wmt_en_de_big"],
    "criterion": ["proxy_dirichlet_distillation", "dirichlet_nll_distillation", "ensemble_kl_distillation"],
    "task": ["translation_distillation"],
}


def test_every_name_is_registered():
    registries = {"model": MODEL_REGISTRY, "arch": ARCH_MODEL_REGISTRY, "criterion": CRITERION_REGISTRY,
                  "task": TASK_REGISTRY}
    for kind, names in NAMES.items():
        for name in names:
            assert name in registries[kind], (kind, name)
            assert registries[kind][name].__module__.startswith("proxy_end2."), (kind, name)


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


def test_version():
    assert proxy_end2.__version__
