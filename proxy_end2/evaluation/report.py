"""The evaluation report: quality per set, OOD detection per measure, prediction rejection per measure, plots.

:func:`evaluate` is the Python API (the ``proxy-end2-evaluate`` console script is a thin wrapper around it);
:func:`render_markdown` turns its result (or a loaded ``report.json``) into Markdown tables.

Report structure (``report.json``; every BLEU, WER, AUC and PRR in %, NaN written as null)::

    format            "proxy_end2.evaluate/1"
    settings          id_set, ood_sets [..], quality ("bleu"|"wer"), error, nbest [n, ..], weightings [..],
                      and the definitions used (units, sentence_bleu, corpus_bleu signature, wer, ood, prr)
    model             kind, members, columns (SU value columns), measures (columns except length, log_prob)
    sets[NAME]        role ("id"|"ood"), path, num_sentences, max_nbest, min_nbest, has_references,
                      empty_top1_hypotheses, fairseq_subset, fairseq_beam, fairseq_result, fairseq_bleu,
                      quality: {bleu, wer, mean_sentence_error} of the top-1 hypotheses, or null without T- lines,
                      measure_means {measure: mean over the top-1 hypotheses},
                      pr_auc_chance (OOD sets: PR-AUC of a random detector)
    ood_detection     [OOD NAME][str(n)][weighting][measure] = {"roc_auc": %, "pr_auc": %}
    prr               [SET NAME][str(n)][weighting][measure] = % (every set with references, the ID set first)
    notes, warnings   lists of strings
    plots             PNG paths relative to the output directory

For n = 1 every weighting gives the same numbers (all are stored, the Markdown shows one column).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import metrics
from .parsing import NO_REFERENCES_WARNING, NO_UNCERTAINTY_HINT, GenerateRun, read_generate_output

__all__ = ["REPORT_FORMAT", "QUALITY_CHOICES", "WEIGHTINGS", "evaluate", "render_markdown", "write_report"]

REPORT_FORMAT = "proxy_end2.evaluate/1"
QUALITY_CHOICES = ("bleu", "wer")
WEIGHTINGS = ("uniform", "prob")

RunLike = Union[GenerateRun, str, os.PathLike]

_WEIGHTING_DOC = {
    "uniform": "mean of the measure over the top-n hypotheses",
    "prob": "average weighted by softmax over the top-n hypotheses of their log_prob (temperature 1)",
}
_QUALITY_DOC = {"bleu": "100 - sentence BLEU", "wer": "sentence WER"}


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _load(run: RunLike, name: Optional[str], allow_missing_ids: bool) -> Tuple[str, GenerateRun]:
    if isinstance(run, GenerateRun):
        return (name or run.name), run
    parsed = read_generate_output(run, name, allow_missing_ids=allow_missing_ids, load_token_values=False)
    return parsed.name, parsed


def _pct(x: float) -> Optional[float]:
    return None if x is None or not np.isfinite(x) else 100.0 * float(x)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _combos(nbest: Sequence[int], weightings: Sequence[str]) -> List[Tuple[int, str]]:
    """(n, weighting) pairs worth showing: for n = 1 every weighting gives the same numbers."""
    return [(n, w) for n in nbest for w in weightings if n > 1 or w == weightings[0]]


def _combo_label(n: int, w: str) -> str:
    return "n=1" if n == 1 else f"n={n} {w}"


# ---------------------------------------------------------------------------------------------------------------
# evaluate


def evaluate(
    id_run: RunLike,
    ood_runs: Union[Mapping[str, RunLike], Sequence[RunLike]] = (),
    *,
    id_name: Optional[str] = None,
    quality: str = "bleu",
    nbest: Optional[Union[int, Sequence[int]]] = None,
    weightings: Sequence[str] = WEIGHTINGS,
    out_dir: Optional[Union[str, os.PathLike]] = None,
    plots: bool = True,
    allow_missing_ids: bool = False,
) -> Dict[str, Any]:
    """Evaluate one model's fairseq-generate outputs on an in-domain set and out-of-domain sets.

    Args:
        id_run: the in-domain set: a :class:`GenerateRun` or the path of a generate output.
        ood_runs: out-of-domain sets, ``{name: run or path}`` or a sequence of runs/paths (named after the
            run/file). May be empty (then only quality and prediction rejection are reported).
        id_name: name of the ID set (default: the run's name).
        quality: ``'bleu'`` (MT) or ``'wer'`` (ASR): the per-sentence error of prediction rejection,
            ``100 - sentence BLEU`` or sentence WER. Corpus BLEU and WER are both reported for every set with
            references.
        nbest: N-best sizes n to aggregate the measures over (an int or a list). Default: 1 and the largest
            n every set has (if > 1). A set whose sentences have fewer than n hypotheses uses those it has.
        weightings: N-best weightings, among ``'uniform'`` and ``'prob'`` (softmax of ``log_prob``).
        out_dir: if given, write ``report.json``, ``report.md`` and ``plots/*.png`` there.
        plots: draw the PNGs (only with ``out_dir``).
        allow_missing_ids: when reading paths, accept sample ids that are not contiguous (with a warning).

    Returns:
        The report as a JSON-serialisable dict (structure in the module docstring):
        ``ood_detection[ood][str(n)][weighting][measure] = {"roc_auc": %, "pr_auc": %}``,
        ``prr[set][str(n)][weighting][measure] = %``, ``sets``, ``settings``, ``model``, ``notes``,
        ``warnings``, ``plots``.

    Raises:
        ValueError: unusable inputs (no uncertainty lines, sets from different models, bad options, ...).
        FileNotFoundError: a path that does not exist.
    """
    if quality not in QUALITY_CHOICES:
        raise ValueError(f"quality must be one of {QUALITY_CHOICES}, got {quality!r}")
    weightings = list(dict.fromkeys(weightings))
    for w in weightings:
        if w not in WEIGHTINGS:
            raise ValueError(f"weighting must be among {WEIGHTINGS}, got {w!r}")
    if not weightings:
        raise ValueError("no N-best weighting given")

    # --- load and check the runs ---------------------------------------------------------------------------
    id_name, id_run = _load(id_run, id_name, allow_missing_ids)
    if isinstance(ood_runs, Mapping):
        ood_items = [_load(run, name, allow_missing_ids) for name, run in ood_runs.items()]
    else:
        ood_items = [_load(run, None, allow_missing_ids) for run in ood_runs]
    runs: List[Tuple[str, str, GenerateRun]] = [(id_name, "id", id_run)] + [(n, "ood", r) for n, r in ood_items]
    names = [name for name, _, _ in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"set names must be unique, got {dupes} more than once (name them: --ood NAME=FILE)")

    for name, _, run in runs:
        if run.header is None or not run.has_uncertainty:
            raise ValueError(f"set {name!r} ({run.path}) has no sequence uncertainty (SU-) lines: "
                             f"{NO_UNCERTAINTY_HINT}")
    id_header = id_run.header
    assert id_header is not None
    for name, _, run in runs[1:]:
        h = run.header
        assert h is not None
        if (h.kind, h.members, h.columns) != (id_header.kind, id_header.members, id_header.columns):
            raise ValueError(
                f"set {name!r} ({run.path}) and the ID set {id_name!r} ({id_run.path}) come from different models "
                f"or uncertainty options: {h.describe()} vs {id_header.describe()}. Generate every set with the "
                f"same checkpoint(s) and options."
            )
    measures = list(id_header.measures)
    if not measures:
        raise ValueError(f"the #SU-columns header of {id_run.path} names no uncertainty measure "
                         f"(only {', '.join(id_header.columns)})")

    warnings: List[str] = []
    notes: List[str] = []
    for name, _, run in runs:
        # the missing references get a note of their own below
        warnings.extend(f"{name}: {w}" for w in run.warnings if w != NO_REFERENCES_WARNING)

    if "prob" in weightings and "log_prob" not in id_header.columns:
        weightings = [w for w in weightings if w != "prob"]
        warnings.append("no log_prob SU column: probability-weighted N-best aggregation skipped")
        if not weightings:
            raise ValueError("weighting 'prob' needs a log_prob SU column, which these outputs do not have")

    available = min(run.max_nbest for _, _, run in runs)
    if nbest is None:
        ns = sorted({1, available})
    else:
        ns = sorted({int(n) for n in ([nbest] if isinstance(nbest, (int, np.integer)) else nbest)})
        if not ns or ns[0] < 1:
            raise ValueError(f"nbest values must be >= 1, got {nbest}")
        for name, _, run in runs:
            if ns[-1] > run.max_nbest:
                raise ValueError(
                    f"N-best size {ns[-1]} requested, but set {name!r} ({run.path}) has at most {run.max_nbest} "
                    f"hypotheses per sentence (fairseq-generate --nbest); use --nbest <= {available} or regenerate"
                )
    for name, _, run in runs:
        short = sum(1 for s in run.sentences if len(s.hypotheses) < ns[-1])
        if short:
            notes.append(f"{name}: {short} sentence(s) have fewer than {ns[-1]} hypotheses; their N-best "
                         f"aggregates use the hypotheses they have")

    # --- aggregated measures per set: agg[name][(n, w)][measure] -> [N] -----------------------------------
    col = {c: i for i, c in enumerate(id_header.columns)}
    agg: Dict[str, Dict[Tuple[int, str], Dict[str, np.ndarray]]] = {}
    top1: Dict[str, Dict[str, np.ndarray]] = {}  # [N] values of the top-1 hypothesis
    for name, _, run in runs:
        su = run.su_array(ns[-1])  # [N, n_max, C], NaN-padded
        present = ~np.isnan(run.su_matrix("length", ns[-1]))  # [N, n_max] hypothesis exists
        for m in measures:
            bad = int((~np.isfinite(su[:, :, col[m]]) & present).sum())
            if bad:
                warnings.append(f"{name}: {bad} non-finite value(s) of {m}; ranked as most uncertain (NaN, +inf) "
                                f"or least uncertain (-inf)")
        log_probs = su[:, :, col["log_prob"]] if "log_prob" in col else None
        top1[name] = {m: su[:, 0, col[m]] for m in measures}
        agg[name] = {}
        for n in ns:
            for w in weightings:
                agg[name][(n, w)] = {
                    m: metrics.nbest_aggregate(su[:, :n, col[m]], None if log_probs is None else log_probs[:, :n], w)
                    for m in measures
                }

    # --- quality ------------------------------------------------------------------------------------------
    sets: Dict[str, Any] = {}
    errors: Dict[str, np.ndarray] = {}
    for name, role, run in runs:
        info: Dict[str, Any] = {
            "role": role,
            "path": run.path,
            "num_sentences": run.num_sentences,
            "max_nbest": run.max_nbest,
            "min_nbest": run.min_nbest,
            "has_references": run.has_references,
            "empty_top1_hypotheses": sum(1 for s in run.sentences if not s.hypotheses[0].text.strip()),
            "fairseq_subset": run.subset,
            "fairseq_beam": run.beam,
            "fairseq_result": run.fairseq_result,
            "fairseq_bleu": run.fairseq_bleu,
            "quality": None,
            # mean of each measure over the top-1 hypotheses (finite values only)
            "measure_means": {m: float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else None
                              for m, v in top1[name].items()},
        }
        if run.has_references:
            hyps, refs = run.hypotheses(0), run.references()
            info["quality"] = {"bleu": metrics.corpus_bleu(hyps, refs), "wer": metrics.corpus_wer(hyps, refs)}
            errors[name] = metrics.sentence_errors(hyps, refs, quality)
            info["quality"]["mean_sentence_error"] = float(errors[name].mean())
        else:
            what = "the ID set" if role == "id" else "OOD set"
            notes.append(f"{what} {name!r} has no reference (T-) lines: corpus BLEU/WER and prediction rejection "
                         f"(PRR) cannot be computed for it" + ("; OOD detection is still reported" if role == "id"
                                                              else ""))
        sets[name] = info

    # --- OOD detection --------------------------------------------------------------------------------------
    ood_detection: Dict[str, Any] = {}
    for name, _, run in runs[1:]:
        n_id, n_ood = id_run.num_sentences, run.num_sentences
        sets[name]["pr_auc_chance"] = 100.0 * n_ood / (n_id + n_ood)
        res: Dict[str, Any] = {}
        for n in ns:
            res[str(n)] = {}
            for w in weightings:
                res[str(n)][w] = {}
                for m in measures:
                    scores = metrics.ood_detection_scores(agg[id_name][(n, w)][m], agg[name][(n, w)][m])
                    res[str(n)][w][m] = {"roc_auc": _pct(scores["roc_auc"]), "pr_auc": _pct(scores["pr_auc"])}
        ood_detection[name] = res

    # --- prediction rejection -------------------------------------------------------------------------------
    prr: Dict[str, Any] = {}
    curves: Dict[str, Dict[Tuple[int, str], Dict[str, metrics.RejectionCurves]]] = {}
    for name, _, run in runs:
        if name not in errors:
            continue
        prr[name] = {}
        curves[name] = {}
        for n in ns:
            prr[name][str(n)] = {}
            for w in weightings:
                c = {m: metrics.rejection_curves(errors[name], agg[name][(n, w)][m]) for m in measures}
                curves[name][(n, w)] = c
                prr[name][str(n)][w] = {m: c[m].prr for m in measures}
        if not np.isfinite(next(iter(curves[name][(ns[0], weightings[0])].values())).prr):
            notes.append(f"{name}: all sentences have the same error, PRR is undefined (null)")

    report: Dict[str, Any] = {
        "format": REPORT_FORMAT,
        "settings": {
            "id_set": id_name,
            "ood_sets": [name for name, _, _ in runs[1:]],
            "quality": quality,
            "error": _QUALITY_DOC[quality],
            "nbest": ns,
            "weightings": weightings,
            "units": "all BLEU, WER, ROC-AUC, PR-AUC, PRR values in %; measures in nats",
            "sentence_bleu": "sacrebleu sentence BLEU, smooth_method='floor', smooth_value=1.1, effective order, "
                             "13a tokenisation (the authors' choice)",
            "corpus_bleu": metrics.corpus_bleu_signature(),
            "wer": "word-level Levenshtein on whitespace-split, case-sensitive text; corpus WER = total edits / "
                   "total reference words",
            "ood": "OOD = positive class, higher measure = more OOD; ROC-AUC = sklearn roc_auc_score, PR-AUC = "
                   "sklearn average_precision_score",
            "prr": "100 * (AUC_random - AUC_measure) / (AUC_random - AUC_oracle) of the error-retention curves "
                   "(mean error over all sentences after rejecting the most uncertain fraction, rejected ones "
                   "get error 0); 100 = oracle, 0 = random",
        },
        "model": {"kind": id_header.kind, "members": id_header.members, "columns": list(id_header.columns),
                  "measures": measures},
        "sets": sets,
        "ood_detection": ood_detection,
        "prr": prr,
        "notes": notes,
        "warnings": warnings,
        "plots": [],
    }

    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if plots:
            report["plots"] = _draw_plots(out, report, agg, curves, ns, weightings, quality)
        write_report(report, out)
    return _jsonable(report)


def _draw_plots(out: Path, report, agg, curves, ns, weightings, quality) -> List[str]:
    from .plots import plot_ood_histograms, plot_rejection_curves, safe_filename

    written: List[str] = []
    id_name = report["settings"]["id_set"]
    combos = _combos(ns, weightings)
    err_label = "100 - sBLEU (%)" if quality == "bleu" else "sentence WER (%)"
    for name, per_combo in curves.items():
        for n, w in combos:
            suffix = "n1" if n == 1 else f"n{n}_{w}"
            path = out / "plots" / f"rejection_{safe_filename(name)}_{suffix}.png"
            plot_rejection_curves(per_combo[(n, w)], path, error_label=err_label,
                                  title=f"{name}: prediction rejection ({_combo_label(n, w)})")
            written.append(str(path.relative_to(out)))
    for ood_name, res in report["ood_detection"].items():
        for n, w in combos:
            suffix = "n1" if n == 1 else f"n{n}_{w}"
            path = out / "plots" / f"hist_{safe_filename(id_name)}_vs_{safe_filename(ood_name)}_{suffix}.png"
            aucs = {m: (v["roc_auc"] if v["roc_auc"] is not None else float("nan"))
                    for m, v in res[str(n)][w].items()}
            plot_ood_histograms(agg[id_name][(n, w)], agg[ood_name][(n, w)], path, id_name=id_name,
                                ood_name=ood_name, roc_aucs=aucs,
                                title=f"{id_name} vs {ood_name} ({_combo_label(n, w)})")
            written.append(str(path.relative_to(out)))
    return written


# ---------------------------------------------------------------------------------------------------------------
# output


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


def render_markdown(report: Mapping[str, Any]) -> str:
    """Markdown summary of a report (the dict of :func:`evaluate`, or ``report.json`` loaded)."""
    st, model, sets = report["settings"], report["model"], report["sets"]
    ns, weightings = [int(n) for n in st["nbest"]], list(st["weightings"])
    combos = _combos(ns, weightings)
    id_name = st["id_set"]
    lines = ["# proxy-end2-evaluate report", ""]
    lines.append(f"Model: `{model['kind']}`, members = {model['members']}. ID set: **{id_name}**; OOD sets: "
                 + (", ".join(f"**{n}**" for n in st["ood_sets"]) or "none") + ".")
    lines.append("")
    lines.append("Measures (SU columns, higher = more uncertain): " + ", ".join(f"`{m}`" for m in model["measures"])
                 + ".")
    lines.append(f"N-best n = {', '.join(map(str, ns))}; weighting: "
                 + "; ".join(f"{w} = {_WEIGHTING_DOC[w]}" for w in weightings)
                 + (" (for n = 1 they coincide)." if 1 in ns and len(weightings) > 1 else "."))
    lines.append("All numbers in %.")
    lines.append("")

    lines += ["## Quality (top-1 hypothesis)", ""]
    rows = []
    for name, info in sets.items():
        q = info.get("quality")
        rows.append([
            name, info["role"].upper(), str(info["num_sentences"]), str(info["max_nbest"]),
            _fmt(q["bleu"], 2) if q else "n/a (no T- lines)",
            _fmt(q["wer"], 2) if q else "n/a",
            (info.get("fairseq_result") or "-").split(",")[0],
        ])
    lines += _table(["set", "role", "sentences", "hyps/sentence", "BLEU (sacrebleu)", "WER", "fairseq's scorer"],
                    rows, ["---", "---", "---:", "---:", "---:", "---:", "---"])
    lines.append("")

    for ood_name, res in report["ood_detection"].items():
        n_id, n_ood = sets[id_name]["num_sentences"], sets[ood_name]["num_sentences"]
        lines += [f"## OOD detection: {id_name} (ID, {n_id}) vs {ood_name} (OOD, {n_ood})", ""]
        lines.append(f"ROC-AUC and PR-AUC, OOD = positive class; PR-AUC of a random detector = "
                     f"{_fmt(sets[ood_name].get('pr_auc_chance'))}.")
        lines.append("")
        cols = []
        for n, w in combos:
            vals = res[str(n)][w]
            cols.append((f"{_combo_label(n, w)} ROC", {m: v["roc_auc"] for m, v in vals.items()}))
            cols.append((f"{_combo_label(n, w)} PR", {m: v["pr_auc"] for m, v in vals.items()}))
        lines += _measure_table(model["measures"], cols)
        lines.append("")

    q = st["quality"]
    for name, res in report["prr"].items():
        err = sets[name]["quality"]["mean_sentence_error"]
        lines += [f"## Sequence error detection on {name} ({sets[name]['role'].upper()}): PRR", ""]
        lines.append(f"Error = {_QUALITY_DOC[q]} (mean {_fmt(err, 2)}); rejecting the most uncertain first; "
                     f"100 = oracle, 0 = random.")
        lines.append("")
        lines += _measure_table(model["measures"], [(_combo_label(n, w), res[str(n)][w]) for n, w in combos])
        lines.append("")
    if not report["prr"]:
        lines += ["## Sequence error detection", "",
                  "Not computed: no set has reference (T-) lines.", ""]

    if report.get("notes"):
        lines += ["## Notes", ""] + [f"* {n}" for n in report["notes"]] + [""]
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"* {w}" for w in report["warnings"]] + [""]
    if report.get("plots"):
        lines += ["## Plots", ""] + [f"* `{p}`" for p in report["plots"]] + [""]
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], out_dir: Union[str, os.PathLike]) -> Tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = _jsonable(report)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(data) + "\n", encoding="utf-8")
    return json_path, md_path
