"""Offline teacher cache: the ensemble runs once over the data (``proxy-end2-teacher-cache``, :mod:`.build`),
and training reads what the criteria need from disk (``--teacher-cache DIR``) with no teacher in memory.

* :mod:`.store`: the on-disk format, its writer and reader, and the fingerprints of data and teachers
  (numpy and torch only);
* :mod:`.build`: the command (fairseq);
* :mod:`.dataset`: the dataset wrapper that attaches the cached statistics to every batch (fairseq).

What is stored per target token is a :class:`~proxy_end2.uncertainty.TopKStatistics`: the top-k of the
ensemble mean, the tail mass and the exact MKL, EPKL and expected entropy. This package never imports
fairseq itself; :mod:`.build` and :mod:`.dataset` do.
"""
