"""The Markdown summary of an evaluation report (the dict of :func:`.report.evaluate`, or ``report.json``
loaded): quality per set, OOD detection and prediction rejection tables, notes, warnings, plots.

Every number shown is in % (as in the report); the best value of a column is bold. No fairseq import.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["render_markdown", "shown_combinations", "combination_label"]

_WEIGHTING_DOC = {
    "uniform": "mean of the measure over the top-n hypotheses",
    "prob": "average weighted by softmax over the top-n hypotheses of their log_prob (temperature 1)",
}


def shown_combinations(nbest: Sequence[int], weightings: Sequence[str]) -> List[Tuple[int, str]]:
    """(n, weighting) pairs worth showing: for n = 1 every weighting gives the same numbers, so only the first."""
    return [(n, w) for n in nbest for w in weightings if n > 1 or w == weightings[0]]


def combination_label(n: int, weighting: str) -> str:
    """Column/plot label of an (N-best size, weighting) pair: ``n=1``, ``n=5 prob``."""
    return "n=1" if n == 1 else f"n={n} {weighting}"


def _fmt(x: Optional[float], digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _table(header: List[str], rows: List[List[str]], align: Optional[List[str]] = None) -> List[str]:
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _measure_table(measures: List[str], columns: List[Tuple[str, Dict[str, Optional[float]]]]) -> List[str]:
    """Rows = measures, one column per (label, {measure: value}); the best (largest) value per column bold."""
    best = {}
    for label, vals in columns:
        finite = [v for v in vals.values() if v is not None and math.isfinite(v)]
        best[label] = max(finite) if finite else None
    rows = []
    for m in measures:
        row = [f"`{m}`"]
        for label, vals in columns:
            v = vals.get(m)
            s = _fmt(v)
            if v is not None and best[label] is not None and _fmt(v) == _fmt(best[label]):
                s = f"**{s}**"
            row.append(s)
        rows.append(row)
    return _table(["measure"] + [label for label, _ in columns], rows)


def _introduction(report: Mapping[str, Any], ns: List[int], weightings: List[str]) -> List[str]:
    st, model = report["settings"], report["model"]
    return [
        "# proxy-end2-evaluate report",
        "",
        f"Model: `{model['kind']}`, members = {model['members']}. ID set: **{st['id_set']}**; OOD sets: "
        + (", ".join(f"**{n}**" for n in st["ood_sets"]) or "none") + ".",
        "",
        "Measures (SU columns, higher = more uncertain): " + ", ".join(f"`{m}`" for m in model["measures"]) + ".",
        f"N-best n = {', '.join(map(str, ns))}; weighting: "
        + "; ".join(f"{w} = {_WEIGHTING_DOC[w]}" for w in weightings)
        + (" (for n = 1 they coincide)." if 1 in ns and len(weightings) > 1 else "."),
        "All numbers in %.",
        "",
    ]


def _quality_section(sets: Mapping[str, Any]) -> List[str]:
    rows = []
    for name, info in sets.items():
        q = info.get("quality")
        rows.append([
            name, info["role"].upper(), str(info["num_sentences"]), str(info["max_nbest"]),
            _fmt(q["bleu"], 2) if q else "n/a (no T- lines)",
            _fmt(q["wer"], 2) if q else "n/a",
            (info.get("fairseq_result") or "-").split(",")[0],
        ])
    return (["## Quality (top-1 hypothesis)", ""]
            + _table(["set", "role", "sentences", "hyps/sentence", "BLEU (sacrebleu)", "WER", "fairseq's scorer"],
                     rows, ["---", "---", "---:", "---:", "---:", "---:", "---"])
            + [""])


def _ood_sections(report: Mapping[str, Any], combos: List[Tuple[int, str]]) -> List[str]:
    sets, id_name, measures = report["sets"], report["settings"]["id_set"], report["model"]["measures"]
    lines: List[str] = []
    for ood_name, res in report["ood_detection"].items():
        n_id, n_ood = sets[id_name]["num_sentences"], sets[ood_name]["num_sentences"]
        lines += [f"## OOD detection: {id_name} (ID, {n_id}) vs {ood_name} (OOD, {n_ood})", ""]
        lines.append(f"ROC-AUC and PR-AUC, OOD = positive class; PR-AUC of a random detector = "
                     f"{_fmt(sets[ood_name].get('pr_auc_chance'))}.")
        lines.append("")
        cols = []
        for n, w in combos:
            vals = res[str(n)][w]
            cols.append((f"{combination_label(n, w)} ROC", {m: v["roc_auc"] for m, v in vals.items()}))
            cols.append((f"{combination_label(n, w)} PR", {m: v["pr_auc"] for m, v in vals.items()}))
        lines += _measure_table(measures, cols)
        lines.append("")
    return lines


def _rejection_sections(report: Mapping[str, Any], combos: List[Tuple[int, str]]) -> List[str]:
    sets, error = report["sets"], report["settings"]["error"]
    lines: List[str] = []
    for name, res in report["prr"].items():
        mean_error = sets[name]["quality"]["mean_sentence_error"]
        lines += [f"## Sequence error detection on {name} ({sets[name]['role'].upper()}): PRR", ""]
        lines.append(f"Error = {error} (mean {_fmt(mean_error, 2)}); rejecting the most uncertain first; "
                     f"100 = oracle, 0 = random.")
        lines.append("")
        lines += _measure_table(report["model"]["measures"],
                                [(combination_label(n, w), res[str(n)][w]) for n, w in combos])
        lines.append("")
    if not report["prr"]:
        lines += ["## Sequence error detection", "", "Not computed: no set has reference (T-) lines.", ""]
    return lines


def _token_error_sections(report: Mapping[str, Any]) -> List[str]:
    lines: List[str] = []
    for name, res in (report.get("token_errors") or {}).items():
        lines += [f"## Token error detection on {name} ({report['sets'][name]['role'].upper()})", ""]
        lines.append(f"{res['tokens']} top-1 tokens of {res['sentences']} hypotheses, {res['errors']} wrong "
                     f"({_fmt(res['error_rate'], 2)} %, labelled at the {res['unit']} level; the PR-AUC of a random "
                     f"detector). Wrong tokens = positive class, EOS values left out.")
        lines.append("")
        measures = list(res["measures"])
        lines += _measure_table(measures, [("ROC-AUC", {m: v["roc_auc"] for m, v in res["measures"].items()}),
                                           ("PR-AUC", {m: v["pr_auc"] for m, v in res["measures"].items()})])
        lines.append("")
    return lines


def _lists(report: Mapping[str, Any]) -> List[str]:
    lines: List[str] = []
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"* {n}" for n in report["notes"]] + [""]
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"* {w}" for w in report["warnings"]] + [""]
    if report.get("plots"):
        lines += ["## Plots", ""] + [f"* `{p}`" for p in report["plots"]] + [""]
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """Markdown summary of a report (the dict of :func:`.report.evaluate`, or ``report.json`` loaded)."""
    ns = [int(n) for n in report["settings"]["nbest"]]
    weightings = list(report["settings"]["weightings"])
    combos = shown_combinations(ns, weightings)
    lines = (_introduction(report, ns, weightings) + _quality_section(report["sets"])
             + _ood_sections(report, combos) + _rejection_sections(report, combos) + _token_error_sections(report)
             + _lists(report))
    return "\n".join(lines)
