"""Build fairseq tasks and models in-process from command-line flags (as fairseq-train would)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from conftest import SRC, TGT, USER_DIR


def build_cfg(data: Path, extra: Sequence[str]):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, [str(data), "--user-dir", USER_DIR, "-s", SRC, "-t", TGT, "--cpu", *map(str, extra)]
    )
    return convert_namespace_to_omegaconf(args)


def build_task_and_model(data: Path, extra: Sequence[str]):
    cfg = build_cfg(data, extra)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    return cfg, task, model


def build_s2t_cfg(data: Path, extra: Sequence[str]):
    """As :func:`build_cfg` for fairseq speech-to-text data (no language pair; ``--config-yaml config.yaml``)."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, [str(data), "--user-dir", USER_DIR, "--config-yaml", "config.yaml", "--cpu", *map(str, extra)]
    )
    return convert_namespace_to_omegaconf(args)


def assert_dirichlet_read_out(model, logits, extra, offset: float) -> None:
    """A Prior Network's read-out of its logits [B, T, K]: softmax probabilities that sum to one, and float64
    concentrations ``exp(z) + offset`` with the model's offset."""
    import torch

    probs = model.get_normalized_probs((logits, extra), log_probs=False)
    torch.testing.assert_close(probs.sum(-1), torch.ones(logits.shape[:-1]))
    alphas = model.get_dirichlet_concentrations((logits, extra))
    assert alphas.dtype == torch.float64
    torch.testing.assert_close(alphas, logits.double().exp() + offset)
    assert model.model_offset == offset


def assert_statistics_match_stacked_members(stats, checkpoints, task, sample) -> None:
    """Streamed teacher statistics equal those of the members' logits run by fairseq's own loader, stacked on
    dim -2 ([B, T, M, K]) and reduced at once."""
    import torch

    from fairseq import checkpoint_utils
    from proxy_end2.uncertainty import ensemble_statistics

    models, _ = checkpoint_utils.load_model_ensemble([str(p) for p in checkpoints], task=task)
    with torch.no_grad():
        stacked = torch.stack([m.eval()(**sample["net_input"])[0] for m in models], dim=-2)  # B x T x M x K
    expected = ensemble_statistics(stacked)
    torch.testing.assert_close(stats.log_mean_probs, expected.log_mean_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats.mkl(), expected.mkl(), rtol=1e-4, atol=1e-6)
    assert stats.log_mean_probs.shape[:2] == sample["target"].shape


def assert_incremental_decoding_matches(model, batch, encoder_out, steps: int) -> None:
    """Decoding ``steps`` tokens one at a time with fairseq's incremental state gives the full pass's outputs."""
    import torch

    full, _ = model(**batch)
    state = {}
    outs = []
    for t in range(steps):
        out, _ = model.decoder(batch["prev_output_tokens"][:, : t + 1], encoder_out=encoder_out, incremental_state=state)
        outs.append(out[:, -1])
    torch.testing.assert_close(torch.stack(outs, 1), full, rtol=1e-4, atol=1e-5)
