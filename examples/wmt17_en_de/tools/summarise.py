"""Side-by-side summary of the recipe's models: BLEU (sacrebleu against the raw references), OOD detection
ROC-AUC per out-of-domain set for a total and a knowledge uncertainty measure, and sequence error detection
(PRR) on the in-domain set; a second table from the reference scores where there are any.

    python summarise.py --manifest sets.tsv --generate-dir G --reports-dir R --models "ensemble ..." --out WORK/summary

Writes ``OUT.md`` (the tables and how to read them) and ``OUT.json`` (the same numbers), prints the Markdown.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Optional

TOTAL, KNOWLEDGE = "entropy_of_expected", "mutual_information"
NAMES = {
    "ensemble": "ensemble",
    "teacher1": "member 1 (single model)",
    "student_proxy_dirichlet_distillation": "Proxy-Dirichlet (reverse KL)",
    "student_forward_proxy_dirichlet_distillation": "Proxy-Dirichlet (forward KL)",
    "student_ensemble_kl_distillation": "EnD (KL to the mean)",
    "student_dirichlet_nll_distillation": "EnD^2 (Dirichlet NLL)",
}


def _load(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pick(table: dict, nbest: int, weighting: str, measure: str, key: Optional[str] = None) -> Optional[float]:
    cell = table.get(str(nbest), {}).get(weighting, {}).get(measure)
    if cell is None:
        return None
    return cell[key] if key else cell


def model_row(model: str, report: Optional[dict], bleu: Dict[str, Optional[float]], args) -> dict:
    """The numbers of one model: BLEU per test set, ROC-AUC (total, knowledge) per OOD set, PRR on the ID set."""
    single = bool(report) and report["model"]["kind"] == "ensemble" and report["model"]["members"] == 1
    row = {"model": model, "bleu": bleu, "roc_auc": {}, "prr": {}}
    for measure in (TOTAL, KNOWLEDGE):
        knowledge_of_one_model = single and measure == KNOWLEDGE  # one model has no knowledge uncertainty
        for ood in args.ood_sets:
            value = None if not report or knowledge_of_one_model else _pick(
                report["ood_detection"].get(ood, {}), args.nbest, args.weighting, measure, "roc_auc")
            row["roc_auc"].setdefault(ood, {})[measure] = value
        row["prr"][measure] = None if not report or knowledge_of_one_model else _pick(
            report["prr"].get(args.id_set, {}), args.nbest, args.weighting, measure)
    return row


def decode_table(rows: List[dict], tests: List[str], args) -> List[str]:
    header = ["model"] + [f"BLEU {t}" for t in tests] + [f"ROC-AUC {o}" for o in args.ood_sets] + [
        f"PRR {args.id_set}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [NAMES.get(row["model"], row["model"])] + [_fmt(row["bleu"].get(t)) for t in tests]
        cells += [f"{_fmt(row['roc_auc'][o][TOTAL])} / {_fmt(row['roc_auc'][o][KNOWLEDGE])}" for o in args.ood_sets]
        cells.append(f"{_fmt(row['prr'][TOTAL])} / {_fmt(row['prr'][KNOWLEDGE])}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def reference_table(reports: Dict[str, dict], args) -> List[str]:
    header = ["model", f"NLL {args.id_set} (nats/token)"] + [f"ROC-AUC {o}" for o in args.ood_sets]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, report in reports.items():
        nll = report["sets"][args.id_set].get("measure_means", {}).get("score")
        cells = [NAMES.get(model, model), "-" if nll is None else f"{nll:.3f}"]
        for ood in args.ood_sets:
            table = report["ood_detection"].get(ood, {})
            cells.append(f"{_fmt(_pick(table, 1, 'uniform', TOTAL, 'roc_auc'))} / "
                         f"{_fmt(_pick(table, 1, 'uniform', KNOWLEDGE, 'roc_auc'))}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True)
    p.add_argument("--generate-dir", required=True)
    p.add_argument("--reports-dir", required=True)
    p.add_argument("--models", required=True, help="space-separated")
    p.add_argument("--id-set", default="test")
    p.add_argument("--ood-sets", required=True, help="space-separated")
    p.add_argument("--nbest", type=int, default=1)
    p.add_argument("--weighting", default="uniform", choices=["uniform", "prob"])
    p.add_argument("--out", required=True, help="OUT.md and OUT.json are written")
    args = p.parse_args(argv)
    args.ood_sets = args.ood_sets.split()
    with open(args.manifest, encoding="utf-8") as f:
        sets = [line.rstrip("\n").split("\t") for line in f if line.strip() and not line.startswith("#")]
    tests = [s[0] for s in sets if s[1] == "test"]
    rows, reference_reports = [], {}
    for model in args.models.split():
        bleu = {t: (_load(os.path.join(args.generate_dir, model, "decode", f"bleu-{t}.json")) or {}).get("bleu")
                for t in tests}
        rows.append(model_row(model, _load(os.path.join(args.reports_dir, model, "decode", "report.json")), bleu, args))
        reference = _load(os.path.join(args.reports_dir, model, "reference", "report.json"))
        if reference:
            reference_reports[model] = reference
    text = ["# WMT17 En-De: summary", "", *decode_table(rows, tests, args), "",
            f"Translations (beam search; measures over the top {args.nbest} hypothesis/es, {args.weighting} weights). "
            "BLEU: sacrebleu on detokenised output against the raw references. ROC-AUC (%, OOD = positive): "
            f"detecting each out-of-domain set against {args.id_set} with a total uncertainty ({TOTAL}) / a "
            f"knowledge uncertainty ({KNOWLEDGE}), each the mean over the hypothesis' tokens. PRR (%): sequence "
            f"error detection on {args.id_set} with the same two measures (100 = oracle, 0 = random). '-': not "
            "available (a single model has no knowledge uncertainty)."]
    if reference_reports:
        text += ["", "## Reference scoring", "", *reference_table(reference_reports, args), "",
                 "The reference of every sentence scored with --score-reference (for an OOD set without a "
                 "reference: its source text); NLL: mean per-token negative log-likelihood of the references."]
    text += ["", "Sets: " + "; ".join(f"{s[0]} = {s[2]}" for s in sets if s[1] != "valid")]
    markdown = "\n".join(text) + "\n"
    with open(args.out + ".md.tmp", "w", encoding="utf-8") as f:
        f.write(markdown)
    with open(args.out + ".json.tmp", "w", encoding="utf-8") as f:
        json.dump({"decode": rows, "reference_reports": sorted(reference_reports), "tests": tests,
                   "ood_sets": args.ood_sets, "nbest": args.nbest, "weighting": args.weighting}, f, indent=1)
    os.replace(args.out + ".json.tmp", args.out + ".json")
    os.replace(args.out + ".md.tmp", args.out + ".md")
    print(markdown)


if __name__ == "__main__":
    main()
