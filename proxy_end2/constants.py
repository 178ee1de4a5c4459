"""Constants shared by the plugin's task, criteria, model and generator (no fairseq, no torch)."""

#: key under which the teacher statistics travel in the sample dict, from the task to the criterion
TEACHER_STATS_KEY = "teacher_stats"

#: Dirichlet offset ``c`` of ``alpha = exp(z) + c`` when a model does not store one (the paper's recipes use 1)
DEFAULT_MODEL_OFFSET = 1.0

#: key under which the cached teacher statistics of a batch (``--teacher-cache``) travel from the dataset's
#: collater to the task: a dict of ``[B, T, k]`` / ``[B, T]`` tensors named as ``TopKStatistics``' fields
TEACHER_CACHE_KEY = "teacher_cache"
