"""The math modules must work without fairseq: ``proxy_end2.uncertainty`` and ``proxy_end2.losses`` are pure
torch, usable by any classifier (design.md, "Architecture").

Two independent checks: (1) a fresh interpreter in which fairseq cannot be found or imported still imports
and runs them, and never ends up with a fairseq module; (2) their source never mentions an import of
fairseq, even one that would be skipped at run time.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "proxy_end2"
# the package __init__ names fairseq (it registers the plugin when fairseq is loaded): checked at run time below
PURE_MODULES = [*sorted((PACKAGE / "uncertainty").glob("*.py")), *sorted((PACKAGE / "losses").glob("*.py"))]

_BLOCKED_RUN = textwrap.dedent(
    r"""
    import importlib.abc
    import importlib.util
    import sys

    attempts = []

    def _is_fairseq(name):
        return name == "fairseq" or name.startswith("fairseq.") or name.startswith("fairseq_cli")

    class _BlockFairseq(importlib.abc.MetaPathFinder):
        # runs before every other finder: any `import fairseq...` fails as if it were not installed
        def find_spec(self, name, path=None, target=None):
            if _is_fairseq(name):
                attempts.append(name)
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by test)", name=name)
            return None

    sys.meta_path.insert(0, _BlockFairseq())
    _real_find_spec = importlib.util.find_spec

    def _find_spec(name, package=None):
        # what proxy_end2/__init__.py asks to decide whether to register the fairseq components
        if _is_fairseq(name):
            return None
        return _real_find_spec(name, package)

    importlib.util.find_spec = _find_spec

    # the block really works
    try:
        import fairseq  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the fairseq block did not work")
    attempts.clear()

    import torch
    import proxy_end2.losses
    import proxy_end2.uncertainty

    teachers = torch.randn(2, 3, 4, 7)
    student = torch.randn(2, 3, 7, requires_grad=True)
    loss = proxy_end2.losses.proxy_dirichlet_loss(student, teachers)
    loss.sum().backward()
    assert torch.isfinite(student.grad).all()
    proxy_end2.uncertainty.ensemble_uncertainty(teachers)

    loaded = sorted(m for m in sys.modules if _is_fairseq(m))
    assert not loaded, f"fairseq modules loaded: {loaded}"
    assert not attempts, f"import of fairseq attempted: {attempts}"
    print("PURE-TORCH-OK")
    """
)


def test_math_modules_import_and_run_without_fairseq():
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED_RUN],
        cwd=str(REPO_ROOT),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "PURE-TORCH-OK" in proc.stdout, proc.stdout[-4000:]


def test_math_sources_contain_no_fairseq_import():
    assert len(PURE_MODULES) >= 11, PURE_MODULES  # uncertainty/*, losses/*
    for path in PURE_MODULES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("fairseq"):
                names = [node.value]  # importlib.import_module("fairseq...") and the like
            for name in names:
                assert not name.startswith("fairseq"), f"{path.name}:{node.lineno} imports {name}"


def test_importing_the_package_and_its_math_does_not_load_fairseq_or_register():
    """fairseq installed but not imported: ``import proxy_end2`` and its math stay light (no fairseq import,
    no registration); importing fairseq first, then proxy_end2, registers the plugin."""
    code = textwrap.dedent(
        """
        import sys
        import proxy_end2, proxy_end2.losses, proxy_end2.uncertainty
        assert "fairseq" not in sys.modules, "fairseq was imported"
        import fairseq
        from fairseq.tasks import TASK_REGISTRY
        assert "translation_distillation" not in TASK_REGISTRY
        import proxy_end2.plugin
        assert "translation_distillation" in TASK_REGISTRY
        print("LIGHT-OK")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(REPO_ROOT), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)
    assert proc.returncode == 0 and "LIGHT-OK" in proc.stdout, proc.stdout[-4000:]
