"""The dataset wrapper that attaches a batch's cached teacher statistics when the batch is collated (in the
data loader's workers, beside training)."""
from __future__ import annotations

from fairseq.data import BaseWrapperDataset

from ..constants import TEACHER_CACHE_KEY
from .store import TeacherCacheSplit


class TeacherCacheDataset(BaseWrapperDataset):
    """``dataset`` whose collated batches carry ``sample[TEACHER_CACHE_KEY]``: the cached statistics of their
    sentences (``sample["id"]``) at their target positions (``sample["target"] != pad``), as CPU tensors that
    fairseq moves to the device with the rest of the batch. Everything else is ``dataset``'s."""

    def __init__(self, dataset, cache: TeacherCacheSplit, pad: int):
        super().__init__(dataset)
        self.cache = cache
        self.pad = pad

    def collater(self, samples):
        batch = self.dataset.collater(samples)
        if not batch or "target" not in batch:
            return batch
        batch[TEACHER_CACHE_KEY] = self.cache.statistics(batch["id"].numpy(), batch["target"].ne(self.pad))
        return batch
