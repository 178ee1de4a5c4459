"""``python -m proxy_end2.teacher_cache``: the same as ``proxy-end2-teacher-cache``."""
from .build import main

main()
