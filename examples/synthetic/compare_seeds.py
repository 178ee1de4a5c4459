"""Mean and spread over student seeds of the main job's reports: BLEU and OOD ROC-AUC per group of students.

    python examples/synthetic/compare_seeds.py runs/cmp proxy_dirichlet_distillation \\
        proxy_dirichlet_distillation-cache

A group ``G`` is every report folder ``<out>/reports/G`` or ``<out>/reports/G-seed<N>`` (the students of
``main_job.py --student-seed N``). Prints one markdown row per group and measure: mean, sample standard
deviation and the per-seed values.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Dict, List

#: (column name, path into report.json)
MEASURES = {
    "BLEU ID": ("sets", "id", "quality", "bleu"),
    "BLEU rare": ("sets", "rare_words", "quality", "bleu"),
    "ROC-AUC rare: MI": ("ood_detection", "rare_words", "1", "uniform", "mutual_information", "roc_auc"),
    "ROC-AUC perm: MI": ("ood_detection", "permuted", "1", "uniform", "mutual_information", "roc_auc"),
    "ROC-AUC rare: EoE": ("ood_detection", "rare_words", "1", "uniform", "entropy_of_expected", "roc_auc"),
    "ROC-AUC perm: EoE": ("ood_detection", "permuted", "1", "uniform", "entropy_of_expected", "roc_auc"),
}


def group_reports(reports_dir: Path, group: str) -> Dict[str, dict]:
    """The reports of ``group`` and its ``-seed<N>`` variants, by folder name."""
    pattern = re.compile(re.escape(group) + r"(-seed\d+)?")
    return {p.name: json.loads((p / "report.json").read_text()) for p in sorted(reports_dir.iterdir())
            if pattern.fullmatch(p.name) and (p / "report.json").exists()}


def _value(report: dict, path) -> float:
    for key in path:
        report = report[key]
    return float(report)


def rows(reports_dir: Path, groups: List[str]) -> List[str]:
    out = ["| students | seeds | measure | mean | std | per seed |", "|---|---:|---|---:|---:|---|"]
    for group in groups:
        reports = group_reports(reports_dir, group)
        if not reports:
            raise SystemExit(f"no report of {group} (or {group}-seed<N>) in {reports_dir}")
        for name, path in MEASURES.items():
            values = [_value(r, path) for r in reports.values()]
            std = statistics.stdev(values) if len(values) > 1 else float("nan")
            out.append(f"| {group} | {len(values)} | {name} | {statistics.mean(values):.2f} | {std:.2f} | "
                       + ", ".join(f"{v:.1f}" for v in values) + " |")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the main job's --out")
    p.add_argument("groups", nargs="+", help="student names without the -seed<N> suffix")
    args = p.parse_args(argv)
    print("\n".join(rows(args.out / "reports", args.groups)))


if __name__ == "__main__":
    main(sys.argv[1:])
