from . import (  # noqa: F401
    dirichlet_nll_distillation,
    ensemble_kl_distillation,
    forward_proxy_dirichlet_distillation,
    proxy_dirichlet_distillation,
)
