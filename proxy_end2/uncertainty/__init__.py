"""Pure-torch uncertainty math of ``proxy_end2`` (never imports fairseq).

* :mod:`.ensemble`: streaming sufficient statistics of an ensemble and its uncertainty measures;
* :mod:`.dirichlet`: Prior-Network (Dirichlet) parametrisation, entropy, KL, density, uncertainty;
* :mod:`.proxy`: the Proxy-Dirichlet precision of the ensemble;
* :mod:`.topk`: the top-k compression of the statistics that an offline teacher cache stores;
* :mod:`.sequence`: token- and sequence-level measures of autoregressive hypotheses (ensembles, "pe"/"ep",
  and Prior Networks).
"""
from .dirichlet import (
    concentration_bounds,
    dirichlet_concentrations,
    dirichlet_entropy,
    dirichlet_kl,
    dirichlet_log_beta,
    dirichlet_log_prob,
    dirichlet_uncertainty,
)
from .ensemble import (
    UNCERTAINTY_KEYS,
    EnsembleStatistics,
    EnsembleStatisticsAccumulator,
    ensemble_statistics,
    ensemble_uncertainty,
)
from .proxy import PRECISION_CHOICES, proxy_precision, proxy_target_precision
from .topk import TopKStatistics, topk_statistics
from .sequence import (
    ENSEMBLE_SEQUENCE_KEYS,
    ENSEMBLE_TOKEN_KEYS,
    PRIOR_NETWORK_SEQUENCE_KEYS,
    PRIOR_NETWORK_TOKEN_KEYS,
    EnsembleSequenceAccumulator,
    ensemble_sequence_uncertainty,
    prior_network_sequence_uncertainty,
)

__all__ = [
    "UNCERTAINTY_KEYS",
    "EnsembleStatistics",
    "EnsembleStatisticsAccumulator",
    "ensemble_statistics",
    "ensemble_uncertainty",
    "concentration_bounds",
    "dirichlet_concentrations",
    "dirichlet_entropy",
    "dirichlet_kl",
    "dirichlet_log_beta",
    "dirichlet_log_prob",
    "dirichlet_uncertainty",
    "PRECISION_CHOICES",
    "proxy_precision",
    "proxy_target_precision",
    "TopKStatistics",
    "topk_statistics",
    "ENSEMBLE_SEQUENCE_KEYS",
    "ENSEMBLE_TOKEN_KEYS",
    "PRIOR_NETWORK_SEQUENCE_KEYS",
    "PRIOR_NETWORK_TOKEN_KEYS",
    "EnsembleSequenceAccumulator",
    "ensemble_sequence_uncertainty",
    "prior_network_sequence_uncertainty",
]
