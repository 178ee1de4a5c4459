"""Shared toolkit of the pure-torch distillation examples (``examples/many_classes``, ``examples/classification``).

One concept per module:

* :mod:`.objectives`: the distillation losses by name (Proxy-EnD^2, EnD^2 with c = 1 and c = 0, EnD) on
  ensemble statistics;
* :mod:`.transfer`: a transfer set (inputs + teacher statistics) and streaming teacher statistics;
* :mod:`.students`: an MLP student with a shared hidden layer feeding a K-way output layer;
* :mod:`.training`: the training loop (Adam, fixed step budget, probes at chosen steps);
* :mod:`.lr_selection`: the learning-rate grid search on a validation split;
* :mod:`.gradients`: how the gradient w.r.t. the student's logits splits between the ensemble's top classes
  and the tail;
* :mod:`.fidelity`: how close the student's mean is to the ensemble's (KL, top-1 agreement);
* :mod:`.uncertainty_eval`: student and ensemble uncertainty measures, rank correlation, OOD ROC-AUC;
* :mod:`.calibration`: accuracy, NLL and expected calibration error against labels;
* :mod:`.reporting`: seed aggregation, Markdown tables, JSON, machine description, logging set-up.

Nothing here imports fairseq; ``proxy_end2.losses`` and ``proxy_end2.uncertainty`` provide the math.
"""
