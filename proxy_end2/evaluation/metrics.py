"""All evaluation metrics under one name (kept for code that imports ``proxy_end2.evaluation.metrics``).

The metrics live in one module per concept:

* :mod:`.quality`: corpus/sentence BLEU and WER, the per-sentence error of prediction rejection;
* :mod:`.ood`: OOD detection, ROC-AUC and PR-AUC;
* :mod:`.rejection`: error-retention curves and the prediction rejection ratio (definition there);
* :mod:`.nbest`: N-best aggregation of sequence-level measures.

Conventions: BLEU, WER, PRR and the values in the report are percentages; the AUC functions return sklearn's
fractions in [0, 1]. Uncertainty measures are "higher = more uncertain". No fairseq import.
"""
from . import nbest, ood, quality, rejection
from .nbest import *  # noqa: F401,F403
from .ood import *  # noqa: F401,F403
from .quality import *  # noqa: F401,F403
from .rejection import *  # noqa: F401,F403

__all__ = [*quality.__all__, *ood.__all__, *rejection.__all__, *nbest.__all__]
