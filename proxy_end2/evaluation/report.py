"""The evaluation report: quality per set, OOD detection per measure, prediction rejection per measure, plots.

:func:`evaluate` is the Python API (the ``proxy-end2-evaluate`` console script is a thin wrapper around it);
:func:`.markdown.render_markdown` turns its result (or a loaded ``report.json``) into Markdown tables.

Report structure (``report.json``; every BLEU, WER, AUC and PRR in %, NaN written as null)::

    format            "proxy_end2.evaluate/1"
    settings          id_set, ood_sets [..], quality ("bleu"|"wer"), error, nbest [n, ..], weightings [..],
                      and the definitions used (units, sentence_bleu, corpus_bleu signature, wer, ood, prr)
    model             kind, members, columns (SU value columns), measures (columns except length, log_prob)
    sets[NAME]        role ("id"|"ood"), path, uncertainty_path (the separate file of the SU-/TU- lines, or
                      null), num_sentences, max_nbest, min_nbest, has_references,
                      empty_top1_hypotheses, fairseq_subset, fairseq_beam, fairseq_result, fairseq_bleu,
                      quality: {bleu, wer, mean_sentence_error} of the top-1 hypotheses, or null without T- lines,
                      measure_means {measure: mean over the top-1 hypotheses},
                      pr_auc_chance (OOD sets: PR-AUC of a random detector)
    ood_detection     [OOD NAME][str(n)][weighting][measure] = {"roc_auc": %, "pr_auc": %}
    prr               [SET NAME][str(n)][weighting][measure] = % (every set with references, the ID set first)
    token_errors      [SET NAME] = {unit, tokens, errors, error_rate %, sentences, measures: {measure:
                      {"roc_auc": %, "pr_auc": %}}}: token-level error detection by every TU- measure over the
                      top-1 hypotheses (:mod:`.token_errors`); only with ``token_errors=True``, else empty
    notes, warnings   lists of strings
    plots             PNG paths relative to the output directory

For n = 1 every weighting gives the same numbers (all are stored, the Markdown shows one column).

:func:`evaluate` runs these steps: load and check the sets (:func:`_plan`: same model, usable N-best sizes and
weightings), aggregate the measures over the N-best lists, quality per set, OOD detection, prediction
rejection, then assemble the report (and draw the plots).
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .markdown import combination_label, render_markdown, shown_combinations
from .nbest import nbest_aggregate
from .ood import ood_detection_scores
from .parsing import NO_REFERENCES_WARNING, NO_UNCERTAINTY_HINT, GenerateRun, UncertaintyHeader, read_generate_output
from .quality import corpus_bleu, corpus_bleu_signature, corpus_wer, sentence_errors
from .rejection import RejectionCurves, rejection_curves
from .token_errors import TOKEN_UNITS, collect_token_errors, token_error_detection

__all__ = ["REPORT_FORMAT", "QUALITY_CHOICES", "WEIGHTINGS", "evaluate", "render_markdown", "write_report"]

REPORT_FORMAT = "proxy_end2.evaluate/1"
QUALITY_CHOICES = ("bleu", "wer")
WEIGHTINGS = ("uniform", "prob")

RunLike = Union[GenerateRun, str, os.PathLike]
Combination = Tuple[int, str]  # (N-best size n, weighting)
SetAggregates = Dict[Combination, Dict[str, np.ndarray]]  # (n, weighting) -> measure -> [N] aggregated values
SetCurves = Dict[Combination, Dict[str, RejectionCurves]]  # (n, weighting) -> measure -> curves

_QUALITY_DOC = {"bleu": "100 - sentence BLEU", "wer": "sentence WER"}


@dataclass
class _Set:
    name: str
    role: str  # "id" or "ood"
    run: GenerateRun


@dataclass
class _Plan:
    """What :func:`evaluate` computes, checked: the sets (all from the same model), measures and options."""

    sets: List[_Set]  # the ID set first
    header: UncertaintyHeader  # the same in every set
    measures: List[str]
    quality: str  # "bleu" or "wer"
    nbest: List[int]  # N-best sizes, ascending
    weightings: List[str]
    token_unit: Optional[str] = None  # token-level error detection at this unit ("word"/"piece"), or None
    sentencepiece_model: Optional[str] = None  # cuts the references into pieces for token_unit="piece"
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    @property
    def id_set(self) -> _Set:
        return self.sets[0]

    @property
    def combinations(self) -> List[Combination]:
        return [(n, w) for n in self.nbest for w in self.weightings]


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
    token_errors: bool = False,
    token_unit: str = "word",
    sentencepiece_model: Optional[Union[str, os.PathLike]] = None,
) -> Dict[str, Any]:
    """Evaluate one model's fairseq-generate outputs on an in-domain set and out-of-domain sets.

    Args:
        id_run: the in-domain set: a :class:`GenerateRun` or the path of a generate output (its uncertainty
            file ``uncertainty-<subset>.txt`` is found next to a ``generate-<subset>.txt``; for another one,
            read the run with :func:`read_generate_output` and its ``uncertainty_path``).
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
        token_errors: also report token-level error detection (:mod:`.token_errors`) for every set with
            references and TU- values (paths are then read with their token values; the generate output must
            have H- lines in the model's units, i.e. no ``--post-process``/``--remove-bpe``).
        token_unit: ``'word'`` (pieces labelled by the word alignment) or ``'piece'`` (by the piece alignment,
            which needs ``sentencepiece_model``, the model that cut the hypotheses).

    Returns:
        The report as a JSON-serialisable dict (structure in the module docstring; BLEU, WER, AUC, PRR in %):
        ``ood_detection[ood][str(n)][weighting][measure] = {"roc_auc": %, "pr_auc": %}``,
        ``prr[set][str(n)][weighting][measure] = %``, ``sets``, ``settings``, ``model``, ``notes``,
        ``warnings``, ``plots``.

    Raises:
        ValueError: unusable inputs (no uncertainty lines, sets from different models, bad options, ...).
        FileNotFoundError: a path that does not exist.
    """
    plan = _plan(id_run, ood_runs, id_name=id_name, quality=quality, nbest=nbest, weightings=weightings,
                 allow_missing_ids=allow_missing_ids, token_unit=token_unit if token_errors else None,
                 sentencepiece_model=sentencepiece_model)
    aggregates, top1 = _aggregate_measures(plan)
    sets, errors = _quality_per_set(plan, top1)
    ood_detection = _ood_detection(plan, aggregates, sets)
    prr, curves = _prediction_rejection(plan, aggregates, errors)
    report = _assemble(plan, sets, ood_detection, prr)
    report["token_errors"] = _token_errors(plan)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if plots:
            report["plots"] = _draw_plots(out, plan, aggregates, curves, ood_detection)
        write_report(report, out)
    return _jsonable(report)


# -- load and check ---------------------------------------------------------------------------------------------


def _plan(id_run: RunLike, ood_runs: Union[Mapping[str, RunLike], Sequence[RunLike]], *, id_name: Optional[str],
          quality: str, nbest, weightings: Sequence[str], allow_missing_ids: bool, token_unit: Optional[str] = None,
          sentencepiece_model=None) -> _Plan:
    """Load the sets and check them and the options; the sets' warnings become the report's."""
    if quality not in QUALITY_CHOICES:
        raise ValueError(f"quality must be one of {QUALITY_CHOICES}, got {quality!r}")
    _check_token_options(token_unit, sentencepiece_model)
    weightings = list(dict.fromkeys(weightings))
    for w in weightings:
        if w not in WEIGHTINGS:
            raise ValueError(f"weighting must be among {WEIGHTINGS}, got {w!r}")
    if not weightings:
        raise ValueError("no N-best weighting given")
    sets = _load_sets(id_run, ood_runs, id_name, allow_missing_ids, load_token_values=token_unit is not None)
    header = _common_header(sets)
    if not header.measures:
        raise ValueError(f"the #SU-columns header of {sets[0].run.path} names no uncertainty measure "
                         f"(only {', '.join(header.columns)})")
    plan = _Plan(sets, header, list(header.measures), quality, nbest=[], weightings=weightings, token_unit=token_unit,
                 sentencepiece_model=None if sentencepiece_model is None else str(sentencepiece_model))
    for s in sets:
        # the missing references get a note of their own (_quality_per_set)
        plan.warnings.extend(f"{s.name}: {w}" for w in s.run.warnings if w != NO_REFERENCES_WARNING)
    if "prob" in weightings and "log_prob" not in header.columns:
        plan.weightings = [w for w in weightings if w != "prob"]
        plan.warnings.append("no log_prob SU column: probability-weighted N-best aggregation skipped")
        if not plan.weightings:
            raise ValueError("weighting 'prob' needs a log_prob SU column, which these outputs do not have")
    plan.nbest = _nbest_sizes(nbest, sets)
    for s in sets:
        short = sum(1 for sentence in s.run.sentences if len(sentence.hypotheses) < plan.nbest[-1])
        if short:
            plan.notes.append(f"{s.name}: {short} sentence(s) have fewer than {plan.nbest[-1]} hypotheses; their "
                              f"N-best aggregates use the hypotheses they have")
    return plan


def _check_token_options(token_unit: Optional[str], sentencepiece_model) -> None:
    if token_unit is not None and token_unit not in TOKEN_UNITS:
        raise ValueError(f"token_unit must be one of {TOKEN_UNITS}, got {token_unit!r}")
    if token_unit == "piece" and sentencepiece_model is None:
        raise ValueError("token errors at the piece level need the sentencepiece model of the hypotheses "
                         "(--sentencepiece-model spm.model)")
    if sentencepiece_model is not None and not os.path.isfile(sentencepiece_model):
        raise FileNotFoundError(f"sentencepiece model not found: {sentencepiece_model}")


def _load(run: RunLike, name: Optional[str], allow_missing_ids: bool, load_token_values: bool = False
          ) -> Tuple[str, GenerateRun]:
    """(name, run) of a run or of the path of a generate output (token values only if asked for)."""
    if isinstance(run, GenerateRun):
        return (name or run.name), run
    parsed = read_generate_output(run, name, allow_missing_ids=allow_missing_ids,
                                  load_token_values=load_token_values)
    return parsed.name, parsed


def _load_sets(id_run: RunLike, ood_runs: Union[Mapping[str, RunLike], Sequence[RunLike]],
               id_name: Optional[str], allow_missing_ids: bool, load_token_values: bool = False) -> List[_Set]:
    """The ID set and the OOD sets, read where given as paths; their names must be unique."""
    name, run = _load(id_run, id_name, allow_missing_ids, load_token_values)
    sets = [_Set(name, "id", run)]
    if isinstance(ood_runs, Mapping):
        loaded = [_load(run, name, allow_missing_ids, load_token_values) for name, run in ood_runs.items()]
    else:
        loaded = [_load(run, None, allow_missing_ids, load_token_values) for run in ood_runs]
    sets += [_Set(name, "ood", run) for name, run in loaded]
    names = [s.name for s in sets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"set names must be unique, got {dupes} more than once (name them: --ood NAME=FILE)")
    return sets


def _common_header(sets: List[_Set]) -> UncertaintyHeader:
    """The uncertainty header every set has (same model, same options), or a ValueError naming the odd set."""
    for s in sets:
        if s.run.header is None or not s.run.has_uncertainty:
            raise ValueError(f"set {s.name!r} ({s.run.path}) has no sequence uncertainty (SU-) lines: "
                             f"{NO_UNCERTAINTY_HINT}")
    id_set = sets[0]
    id_header = id_set.run.header
    assert id_header is not None
    for s in sets[1:]:
        h = s.run.header
        assert h is not None
        if (h.kind, h.members, h.columns) != (id_header.kind, id_header.members, id_header.columns):
            raise ValueError(
                f"set {s.name!r} ({s.run.path}) and the ID set {id_set.name!r} ({id_set.run.path}) come from "
                f"different models or uncertainty options: {h.describe()} vs {id_header.describe()}. Generate "
                f"every set with the same checkpoint(s) and options."
            )
    return id_header


def _nbest_sizes(nbest: Optional[Union[int, Sequence[int]]], sets: List[_Set]) -> List[int]:
    """The N-best sizes, ascending: the requested ones (each at most what every set has), or 1 and the largest
    every set has."""
    available = min(s.run.max_nbest for s in sets)
    if nbest is None:
        return sorted({1, available})
    ns = sorted({int(n) for n in ([nbest] if isinstance(nbest, (int, np.integer)) else nbest)})
    if not ns or ns[0] < 1:
        raise ValueError(f"nbest values must be >= 1, got {nbest}")
    for s in sets:
        if ns[-1] > s.run.max_nbest:
            raise ValueError(
                f"N-best size {ns[-1]} requested, but set {s.name!r} ({s.run.path}) has at most {s.run.max_nbest} "
                f"hypotheses per sentence (fairseq-generate --nbest); use --nbest <= {available} or regenerate"
            )
    return ns


# -- compute ------------------------------------------------------------------------------------------------------


def _aggregate_measures(plan: _Plan) -> Tuple[Dict[str, SetAggregates], Dict[str, Dict[str, np.ndarray]]]:
    """Per set: every measure aggregated over the top-n hypotheses for every (n, weighting), ``[N]`` each, and
    the measures of the top-1 hypothesis, ``{measure: [N]}`` (nats). Warns about non-finite values."""
    col = {c: i for i, c in enumerate(plan.header.columns)}
    n_max = plan.nbest[-1]
    aggregates: Dict[str, SetAggregates] = {}
    top1: Dict[str, Dict[str, np.ndarray]] = {}
    for s in plan.sets:
        su = s.run.su_array(n_max)  # [N, n_max, C], NaN-padded
        present = ~np.isnan(s.run.su_matrix("length", n_max))  # [N, n_max] hypothesis exists
        for m in plan.measures:
            bad = int((~np.isfinite(su[:, :, col[m]]) & present).sum())
            if bad:
                plan.warnings.append(f"{s.name}: {bad} non-finite value(s) of {m}; ranked as most uncertain (NaN, "
                                     f"+inf) or least uncertain (-inf)")
        log_probs = su[:, :, col["log_prob"]] if "log_prob" in col else None
        top1[s.name] = {m: su[:, 0, col[m]] for m in plan.measures}
        aggregates[s.name] = {
            (n, w): {m: nbest_aggregate(su[:, :n, col[m]], None if log_probs is None else log_probs[:, :n], w)
                     for m in plan.measures}
            for n, w in plan.combinations
        }
    return aggregates, top1


def _set_info(s: _Set, top1: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """``sets[NAME]`` of the report, without quality."""
    run = s.run
    return {
        "role": s.role,
        "path": run.path,
        "uncertainty_path": run.uncertainty_path,
        "num_sentences": run.num_sentences,
        "max_nbest": run.max_nbest,
        "min_nbest": run.min_nbest,
        "has_references": run.has_references,
        "empty_top1_hypotheses": sum(1 for sentence in run.sentences if not sentence.hypotheses[0].text.strip()),
        "fairseq_subset": run.subset,
        "fairseq_beam": run.beam,
        "fairseq_result": run.fairseq_result,
        "fairseq_bleu": run.fairseq_bleu,
        "quality": None,
        # mean of each measure over the top-1 hypotheses (finite values only)
        "measure_means": {m: float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else None
                          for m, v in top1.items()},
    }


def _quality_per_set(plan: _Plan, top1: Dict[str, Dict[str, np.ndarray]]
                     ) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """``sets`` of the report (corpus BLEU/WER of the top-1 hypotheses, %) and, per set with references, the
    per-sentence errors ``[N]`` (%) that prediction rejection ranks."""
    sets: Dict[str, Any] = {}
    errors: Dict[str, np.ndarray] = {}
    for s in plan.sets:
        info = _set_info(s, top1[s.name])
        if s.run.has_references:
            hyps, refs = s.run.hypotheses(0), s.run.references()
            info["quality"] = {"bleu": corpus_bleu(hyps, refs), "wer": corpus_wer(hyps, refs)}
            errors[s.name] = sentence_errors(hyps, refs, plan.quality)
            info["quality"]["mean_sentence_error"] = float(errors[s.name].mean())
        else:
            what = "the ID set" if s.role == "id" else "OOD set"
            plan.notes.append(f"{what} {s.name!r} has no reference (T-) lines: corpus BLEU/WER and prediction "
                              f"rejection (PRR) cannot be computed for it"
                              + ("; OOD detection is still reported" if s.role == "id" else ""))
        sets[s.name] = info
    return sets, errors


def _pct(x: Optional[float]) -> Optional[float]:
    """A fraction in %, None when not finite."""
    return None if x is None or not np.isfinite(x) else 100.0 * float(x)


def _ood_detection(plan: _Plan, aggregates: Dict[str, SetAggregates], sets: Dict[str, Any]) -> Dict[str, Any]:
    """``ood_detection[OOD][str(n)][weighting][measure] = {"roc_auc": %, "pr_auc": %}``; adds each OOD set's
    ``pr_auc_chance`` (%) to ``sets``."""
    id_set = plan.id_set
    result: Dict[str, Any] = {}
    for s in plan.sets[1:]:
        n_id, n_ood = id_set.run.num_sentences, s.run.num_sentences
        sets[s.name]["pr_auc_chance"] = 100.0 * n_ood / (n_id + n_ood)
        per_set: Dict[str, Any] = {}
        for n, w in plan.combinations:
            per_set.setdefault(str(n), {})[w] = {}
            for m in plan.measures:
                scores = ood_detection_scores(aggregates[id_set.name][(n, w)][m], aggregates[s.name][(n, w)][m])
                per_set[str(n)][w][m] = {"roc_auc": _pct(scores["roc_auc"]), "pr_auc": _pct(scores["pr_auc"])}
        result[s.name] = per_set
    return result


def _prediction_rejection(plan: _Plan, aggregates: Dict[str, SetAggregates], errors: Dict[str, np.ndarray]
                          ) -> Tuple[Dict[str, Any], Dict[str, SetCurves]]:
    """``prr[SET][str(n)][weighting][measure]`` (%) and the curves behind it, for every set with errors."""
    prr: Dict[str, Any] = {}
    curves: Dict[str, SetCurves] = {}
    for s in plan.sets:
        if s.name not in errors:
            continue
        curves[s.name] = {c: {m: rejection_curves(errors[s.name], aggregates[s.name][c][m]) for m in plan.measures}
                          for c in plan.combinations}
        prr[s.name] = {}
        for (n, w), per_measure in curves[s.name].items():
            prr[s.name].setdefault(str(n), {})[w] = {m: c.prr for m, c in per_measure.items()}
        if not np.isfinite(next(iter(curves[s.name][plan.combinations[0]].values())).prr):
            plan.notes.append(f"{s.name}: all sentences have the same error, PRR is undefined (null)")
    return prr, curves


def _token_errors(plan: _Plan) -> Dict[str, Any]:
    """``token_errors[SET]`` (AUCs and error rate in %) for every set with references and TU- values; a note for
    each set without (nothing when token errors were not asked for)."""
    if plan.token_unit is None:
        return {}
    encode = None
    if plan.token_unit == "piece":
        import sentencepiece

        processor = sentencepiece.SentencePieceProcessor(model_file=plan.sentencepiece_model)
        encode = functools.partial(processor.encode, out_type=str)
    result: Dict[str, Any] = {}
    for s in plan.sets:
        has_tu = bool(plan.header.token_measures) and any(x.hypotheses and x.hypotheses[0].tu for x in s.run.sentences)
        if not (s.run.has_references and has_tu):
            plan.notes.append(f"{s.name}: no token error detection (it needs the references, T- lines, and the "
                              f"TU- lines of fairseq-generate without --no-token-uncertainty)")
            continue
        scores = token_error_detection(collect_token_errors(s.run, plan.token_unit, encode))
        result[s.name] = {
            "unit": plan.token_unit, "tokens": scores["tokens"], "errors": scores["errors"],
            "sentences": scores["sentences"], "error_rate": _pct(scores["error_rate"]),
            "measures": {m: {k: _pct(v) for k, v in auc.items()} for m, auc in scores["measures"].items()},
        }
        if scores["errors"] in (0, scores["tokens"]):
            plan.notes.append(f"{s.name}: every top-1 token is {'correct' if scores['errors'] == 0 else 'wrong'}: "
                              f"token error detection is undefined (null)")
    return result


# -- assemble and write -------------------------------------------------------------------------------------------


def _settings(plan: _Plan) -> Dict[str, Any]:
    """``settings`` of the report: the options and the definitions of every number."""
    return {
        "id_set": plan.id_set.name,
        "ood_sets": [s.name for s in plan.sets[1:]],
        "quality": plan.quality,
        "error": _QUALITY_DOC[plan.quality],
        "nbest": plan.nbest,
        "weightings": plan.weightings,
        "units": "all BLEU, WER, ROC-AUC, PR-AUC, PRR values in %; measures in nats",
        "sentence_bleu": "sacrebleu sentence BLEU, smooth_method='floor', smooth_value=1.1, effective order, "
                         "13a tokenisation (the authors' choice)",
        "corpus_bleu": corpus_bleu_signature(),
        "wer": "word-level Levenshtein on whitespace-split, case-sensitive text; corpus WER = total edits / "
               "total reference words",
        "ood": "OOD = positive class, higher measure = more OOD; ROC-AUC = sklearn roc_auc_score, PR-AUC = "
               "sklearn average_precision_score",
        "prr": "100 * (AUC_random - AUC_measure) / (AUC_random - AUC_oracle) of the error-retention curves "
               "(mean error over all sentences after rejecting the most uncertain fraction, rejected ones "
               "get error 0); 100 = oracle, 0 = random",
        "token_errors": None if plan.token_unit is None else (
            f"top-1 hypothesis pieces (H- line) labelled 1 when not matched in a longest common subsequence with "
            f"the reference at the {plan.token_unit} level ("
            + ("each piece gets its word's label" if plan.token_unit == "word" else "reference cut by the "
               "sentencepiece model") + "), EOS value of every TU- line dropped; errors = positive class, higher "
            "measure = more likely wrong; ROC-AUC = roc_auc_score, PR-AUC = average_precision_score (chance = "
            "error rate)"),
    }


def _assemble(plan: _Plan, sets: Dict[str, Any], ood_detection: Dict[str, Any], prr: Dict[str, Any]
              ) -> Dict[str, Any]:
    """The report dict (structure in the module docstring), plots still empty."""
    header = plan.header
    return {
        "format": REPORT_FORMAT,
        "settings": _settings(plan),
        "model": {"kind": header.kind, "members": header.members, "columns": list(header.columns),
                  "measures": plan.measures},
        "sets": sets,
        "ood_detection": ood_detection,
        "prr": prr,
        "token_errors": {},
        "notes": plan.notes,
        "warnings": plan.warnings,
        "plots": [],
    }


def _draw_plots(out: Path, plan: _Plan, aggregates: Dict[str, SetAggregates], curves: Dict[str, SetCurves],
                ood_detection: Dict[str, Any]) -> List[str]:
    """Rejection curves per set with references and ID-vs-OOD histograms per OOD set, for every shown
    (n, weighting); returns the PNG paths relative to ``out``."""
    from .plots import plot_ood_histograms, plot_rejection_curves, safe_filename

    written: List[str] = []
    id_name = plan.id_set.name
    combos = shown_combinations(plan.nbest, plan.weightings)
    err_label = "100 - sBLEU (%)" if plan.quality == "bleu" else "sentence WER (%)"
    for name, per_combo in curves.items():
        for n, w in combos:
            suffix = "n1" if n == 1 else f"n{n}_{w}"
            path = out / "plots" / f"rejection_{safe_filename(name)}_{suffix}.png"
            plot_rejection_curves(per_combo[(n, w)], path, error_label=err_label,
                                  title=f"{name}: prediction rejection ({combination_label(n, w)})")
            written.append(str(path.relative_to(out)))
    for ood_name, res in ood_detection.items():
        for n, w in combos:
            suffix = "n1" if n == 1 else f"n{n}_{w}"
            path = out / "plots" / f"hist_{safe_filename(id_name)}_vs_{safe_filename(ood_name)}_{suffix}.png"
            aucs = {m: (v["roc_auc"] if v["roc_auc"] is not None else float("nan"))
                    for m, v in res[str(n)][w].items()}
            plot_ood_histograms(aggregates[id_name][(n, w)], aggregates[ood_name][(n, w)], path, id_name=id_name,
                                ood_name=ood_name, roc_aucs=aucs,
                                title=f"{id_name} vs {ood_name} ({combination_label(n, w)})")
            written.append(str(path.relative_to(out)))
    return written


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars to Python ones, non-finite floats to None, keys to str."""
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


def write_report(report: Mapping[str, Any], out_dir: Union[str, os.PathLike]) -> Tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = _jsonable(report)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(data) + "\n", encoding="utf-8")
    return json_path, md_path
