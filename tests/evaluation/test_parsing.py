"""proxy_end2.evaluation.parsing on hand-written fairseq-generate outputs (docs/output-format.md)."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import List

import numpy as np
import pytest

from proxy_end2.evaluation.parsing import GenerateOutputError, read_generate_output, uncertainty_path_for

HEADER_SU = "#SU-columns\tkind=prior_network\tmembers=1\tlog_prob\tscore\tmutual_information"
HEADER_TU = "#TU-columns\tkind=prior_network\tmembers=1\ttoken_nll\tentropy_of_expected"
GENERATE_LINE = ("Generate test with beam=2: BLEU4 = 41.23, 70.1/47.2/34.0/25.4 (BP=1.000, ratio=1.012, "
                 "syslen=1000, reflen=988)")

# Three sentences, --nbest 2, batch order 2, 0 | 1 (ids interleaved, not sorted). The SU-/TU- lines of the
# first batch come before fairseq's lines of that batch, those of id 1 after them and in reverse rank order.
# Sentence 0 has a single hypothesis (beam search returned fewer than nbest), the second hypothesis of
# sentence 2 is empty.
BASE: List[str] = [
    "2024-05-01 10:00:00 | INFO | fairseq_cli.generate | loading model(s) from student/checkpoint_best.pt",
    HEADER_SU,
    HEADER_TU,
    "SU-2\t0\t3\t-1.5\t0.5\t0.01",
    "SU-2\t1\t1\t-2.5\t2.5\t0.02",
    "SU-0\t0\t3\t-1\t0.333333\t0.1",
    "TU-2\t0\ttoken_nll\t0.1 0.2 1.2",
    "TU-2\t0\tentropy_of_expected\t1 2 3",
    "TU-2\t1\ttoken_nll\t0.7",
    "TU-2\t1\tentropy_of_expected\t2",
    "TU-0\t0\ttoken_nll\t0.1 0.2 0.3",
    "TU-0\t0\tentropy_of_expected\t1 1 1",
    "S-2\tsource two",
    "T-2\tthe reference two",
    "H-2\t-0.7213\tthe hyp@@ two",
    "D-2\t-0.7213\tthe hyptwo",
    "P-2\t-0.1442 -0.2885 -1.7312",
    "H-2\t-3.6067\t",
    "D-2\t-3.6067\t",
    "P-2\t-3.6067",
    "S-0\tsource zero",
    "T-0\treference zero",
    "H-0\t-0.4809\tzero hyp",
    "D-0\t-0.4809\tzero hyp",
    "P-0\t-0.1 -0.2 -1.14",
    "S-1\tsource one",
    "T-1\treference one",
    "H-1\t-0.5\tone best",
    "D-1\t-0.5\tone best",
    "P-1\t-0.5 -0.5 -0.5",
    "H-1\t-0.9\tone second",
    "D-1\t-0.9\tone second",
    "P-1\t-0.9 -0.9 -0.9",
    "SU-1\t1\t3\t-1.9\t0.63\tnan",
    "SU-1\t0\t3\t-1.04\t0.35\t0.03",
    "TU-1\t1\ttoken_nll\t0.5 0.5 0.6",
    "TU-1\t1\tentropy_of_expected\t1.5 1.5 1.5",
    "TU-1\t0\ttoken_nll\t0.1 0.1 0.1",
    "TU-1\t0\tentropy_of_expected\t0.5 0.5 0.5",
    "2024-05-01 10:00:01 | INFO | fairseq_cli.generate | NOTE: hypothesis and token scores are output in base 2",
    "2024-05-01 10:00:01 | INFO | fairseq_cli.generate | Translated 3 sentences (9 tokens) in 0.1s "
    "(30.00 sentences/s, 90.00 tokens/s)",
    GENERATE_LINE,
]


def write(tmp_path: Path, lines: List[str], name: str = "generate-test.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def lineno(lines: List[str], prefix: str) -> int:
    """1-based number of the first line starting with prefix."""
    return next(i for i, line in enumerate(lines, start=1) if line.startswith(prefix))


def without(lines: List[str], *prefixes: str) -> List[str]:
    return [line for line in lines if not line.startswith(prefixes)]


def test_parse_interleaved_nbest_empty_hypotheses(tmp_path):
    run = read_generate_output(write(tmp_path, BASE))
    assert run.name == "test"
    assert [s.id for s in run.sentences] == [0, 1, 2]
    assert run.header.kind == "prior_network" and run.header.members == 1
    assert run.header.columns == ("log_prob", "score", "mutual_information")
    assert run.header.measures == ("score", "mutual_information")  # log_prob is not a measure
    assert run.header.token_measures == ("token_nll", "entropy_of_expected")
    assert (run.subset, run.beam, run.fairseq_bleu, run.translated) == ("test", 2, 41.23, 3)
    assert run.fairseq_result.startswith("BLEU4 = 41.23, 70.1/")
    assert run.has_references and run.has_uncertainty
    assert (run.max_nbest, run.min_nbest) == (2, 1)
    assert run.warnings == []

    s2 = run.sentences[2]
    assert (s2.source, s2.reference) == ("source two", "the reference two")
    h0, h1 = s2.hypotheses
    assert (h0.rank, h0.text, h0.tokenized, h0.score, h0.length) == (0, "the hyptwo", "the hyp@@ two", -0.7213, 3)
    assert h0.su == {"log_prob": -1.5, "score": 0.5, "mutual_information": 0.01}
    np.testing.assert_allclose(h0.tu["token_nll"], [0.1, 0.2, 1.2])
    np.testing.assert_allclose(h0.tu["entropy_of_expected"], [1, 2, 3])
    assert (h1.rank, h1.text, h1.score, h1.length, h1.su["score"]) == (1, "", -3.6067, 1, 2.5)

    s1 = run.sentences[1]
    assert [h.text for h in s1.hypotheses] == ["one best", "one second"]
    assert [h.su["score"] for h in s1.hypotheses] == [0.35, 0.63]  # matched by rank, not by line order
    assert math.isnan(s1.hypotheses[1].su["mutual_information"])

    assert run.hypotheses(0) == ["zero hyp", "one best", "the hyptwo"]
    assert run.hypotheses(1) == ["", "one second", ""]
    assert run.references() == ["reference zero", "reference one", "the reference two"]
    np.testing.assert_allclose(run.su_matrix("score"), [[0.333333, np.nan], [0.35, 0.63], [0.5, 2.5]])
    np.testing.assert_allclose(run.su_matrix("length", 1), [[3], [3], [3]])
    su = run.su_array(2)
    assert su.shape == (3, 2, 3) and np.isnan(su[0, 1]).all()
    np.testing.assert_allclose(su[2, 1], [-2.5, 2.5, 0.02])


def test_empty_hypothesis_without_trailing_tab_and_no_detok_lines(tmp_path):
    lines = [line.rstrip("\t") for line in without(BASE, "D-")]
    run = read_generate_output(write(tmp_path, lines), load_token_values=False)
    assert run.hypotheses(0) == ["zero hyp", "one best", "the hyp@@ two"]  # H- text without D- lines
    assert run.sentences[2].hypotheses[1].text == ""
    assert run.sentences[2].hypotheses[0].tu == {}  # token values not loaded


def test_no_references_no_final_line(tmp_path):
    lines = without(BASE, "T-", "Generate ")
    run = read_generate_output(write(tmp_path, lines), name="ood")
    assert run.name == "ood" and not run.has_references and run.fairseq_result is None
    assert any("no T- (reference) lines" in w for w in run.warnings)
    with pytest.raises(ValueError, match="no reference"):
        run.references()
    assert run.su_matrix("score").shape == (3, 2)


def test_truncated_file_without_final_line(tmp_path):
    lines = BASE[:-1]
    with pytest.raises(GenerateOutputError, match=r"generate-test\.txt:\d+: .*looks truncated"):
        read_generate_output(write(tmp_path, lines))


def test_truncated_in_the_middle_of_a_sentence(tmp_path):
    cut = lineno(BASE, "H-1\t-0.9")  # the file ends with this line
    with pytest.raises(GenerateOutputError, match=rf"generate-test\.txt:{cut}: no final 'Generate <subset> with "
                                                  rf"beam=<B>: \.\.\.' line .* looks truncated"):
        read_generate_output(write(tmp_path, BASE[:cut]))


def test_missing_ids_suggest_batch_size_multiple(tmp_path):
    lines = [line for line in BASE if not re.match(r"^(S|T|H|D|P|SU|TU)-1\t", line)]
    lines = [line.replace("Translated 3 sentences", "Translated 2 sentences") for line in lines]
    path = write(tmp_path, lines)
    with pytest.raises(GenerateOutputError) as err:
        read_generate_output(path)
    msg = str(err.value)
    assert str(path) in msg and "1 of 3 sample ids are missing: 1" in msg
    assert "--required-batch-size-multiple 1" in msg
    run = read_generate_output(path, allow_missing_ids=True)
    assert [s.id for s in run.sentences] == [0, 2] and "missing" in run.warnings[0]


def test_tail_sentences_dropped(tmp_path):
    # ids 0..2 contiguous, but fairseq's log says 5 were translated
    lines = [line.replace("Translated 3 sentences", "Translated 5 sentences") for line in BASE]
    with pytest.raises(GenerateOutputError, match="2 of 5 sample ids are missing: 3, 4"):
        read_generate_output(write(tmp_path, lines))


def test_su_lines_without_header(tmp_path):
    lines = without(BASE, "#SU-columns", "#TU-columns")
    path = write(tmp_path, lines)
    with pytest.raises(GenerateOutputError, match=rf"{re.escape(str(path))}:{lineno(lines, 'SU-')}: SU- line "
                                                  rf"before any #SU-columns header"):
        read_generate_output(path)


def test_su_column_count_differs_from_header(tmp_path):
    lines = list(BASE)
    bad = lineno(lines, "SU-0")
    lines[bad - 1] += "\t0.5"
    path = write(tmp_path, lines)
    with pytest.raises(GenerateOutputError, match=rf":{bad}: SU- line has 4 value columns, the #SU-columns "
                                                  rf"header on line 2 names 3"):
        read_generate_output(path)


def test_hypothesis_without_su_line(tmp_path):
    lines = [line for line in BASE if not line.startswith("SU-1\t1\t")]
    with pytest.raises(GenerateOutputError, match=rf":{lineno(lines, 'H-1	-0.9')}: hypothesis \(id=1, rank=1\) has "
                                                  rf"no SU- line"):
        read_generate_output(write(tmp_path, lines))


def test_su_line_without_hypothesis(tmp_path):
    lines = BASE[:-1] + ["SU-0\t1\t2\t-3\t1.5\t0.2", BASE[-1]]
    with pytest.raises(GenerateOutputError, match=rf":{len(lines) - 1}: SU- line for \(id=0, rank=1\) without a "
                                                  rf"matching hypothesis"):
        read_generate_output(write(tmp_path, lines))


def test_duplicate_id_rank(tmp_path):
    lines = BASE[:-1] + ["SU-2\t1\t1\t-2.5\t2.5\t0.02", BASE[-1]]
    with pytest.raises(GenerateOutputError, match=rf":{len(lines) - 1}: duplicate SU- line for \(id=2, rank=1\); "
                                                  rf"first one on line 5"):
        read_generate_output(write(tmp_path, lines))


def test_two_runs_concatenated(tmp_path):
    first = lineno(BASE, "SU-2\t0")
    with pytest.raises(GenerateOutputError, match=rf":{len(BASE) + first}: duplicate SU- line for \(id=2, rank=0\); "
                                                  rf"first one on line {first} \(two runs concatenated into one "
                                                  rf"file\?\)"):
        read_generate_output(write(tmp_path, BASE + BASE))
    # only the hypotheses duplicated (no S-/T- lines): H- lines of a sentence seen again after other sentences
    lines = without(BASE, "S-", "T-", "Generate ")
    block = [line for line in lines if re.match(r"^(H|D|P)-0\t", line)]
    with pytest.raises(GenerateOutputError, match=r"H-0 line after the hypotheses of other sentences"):
        read_generate_output(write(tmp_path, lines + block))


def test_plain_fairseq_output_without_uncertainty(tmp_path):
    lines = without(BASE, "#SU-", "#TU-", "SU-", "TU-")
    path = write(tmp_path, lines)
    with pytest.raises(GenerateOutputError, match="--user-dir proxy_end2 --task translation_distillation"):
        read_generate_output(path)
    run = read_generate_output(path, require_uncertainty=False)
    assert run.header is None and not run.has_uncertainty and run.hypotheses(0)[1] == "one best"


def test_token_line_length_must_match(tmp_path):
    lines = [line.replace("0.1 0.2 1.2", "0.1 0.2") for line in BASE]
    with pytest.raises(GenerateOutputError, match=r"has 2 values, its SU- line says length 3"):
        read_generate_output(write(tmp_path, lines))
    lines = [line.replace("TU-2\t0\ttoken_nll", "TU-2\t0\tbogus") for line in BASE]
    with pytest.raises(GenerateOutputError, match="'bogus' is not in the #TU-columns header"):
        read_generate_output(write(tmp_path, lines))


def test_header_naming_length_is_tolerated(tmp_path):
    lines = [HEADER_SU.replace("members=1\t", "members=1\tlength\t") if line == HEADER_SU else line for line in BASE]
    run = read_generate_output(write(tmp_path, lines))
    assert run.header.columns == ("log_prob", "score", "mutual_information")


def test_second_header_differs(tmp_path):
    lines = BASE[:-1] + [HEADER_SU.replace("prior_network", "ensemble"), BASE[-1]]
    with pytest.raises(GenerateOutputError, match="second #SU-columns header differs"):
        read_generate_output(write(tmp_path, lines))


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_generate_output(tmp_path / "nope.txt")
    with pytest.raises(GenerateOutputError, match="no H- "):
        read_generate_output(write(tmp_path, ["2024-05-01 10:00:00 | INFO | fairseq_cli.generate | hello"]))


def test_evaluation_sources_contain_no_fairseq_import():
    """Not even an import that would be skipped at run time: no fairseq, fairseq_cli or torch, and nothing from
    the rest of proxy_end2 (``from .. import``), whose modules need them. test_cli.py runs the CLI with them
    blocked."""
    import ast

    package = Path(__file__).resolve().parents[2] / "proxy_end2" / "evaluation"
    sources = sorted(package.glob("*.py"))
    assert len(sources) >= 12, sources  # __init__, parsing, records, metrics and its 4, report, markdown, plots, cli
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name}:{node.lineno} imports from outside proxy_end2.evaluation"
                names = [node.module or ""] if node.level == 0 else []
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value] if re.fullmatch(r"(fairseq|torch)[\w.]*", node.value) else []
            assert not any(n.split(".")[0] in ("fairseq", "fairseq_cli", "torch") for n in names), \
                f"{path.name}:{node.lineno} imports {names}"


# ---------------------------------------------------------------------------------------------------------------
# uncertainty lines in a separate file (fairseq-generate --results-path / --uncertainty-output)

UNCERTAINTY_PREFIXES = ("#SU-columns", "#TU-columns", "SU-", "TU-")


def write_split(tmp_path: Path, lines: List[str] = BASE, generate_name: str = "generate-test.txt",
                uncertainty_name: str = "uncertainty-test.txt"):
    """BASE as fairseq's file and our writer's file: (generate path, uncertainty path, uncertainty lines)."""
    uncertainty = [line for line in lines if line.startswith(UNCERTAINTY_PREFIXES)]
    generate = write(tmp_path, without(lines, *UNCERTAINTY_PREFIXES), generate_name)
    return generate, write(tmp_path, uncertainty, uncertainty_name), uncertainty


def assert_same_run(run, expected):
    """Same sentences, hypotheses, SU and TU values (the numpy arrays compared one by one)."""
    assert run.header == expected.header and run.name == expected.name
    assert (run.subset, run.beam, run.fairseq_result, run.translated) == (
        expected.subset, expected.beam, expected.fairseq_result, expected.translated)
    assert len(run.sentences) == len(expected.sentences)
    for s, e in zip(run.sentences, expected.sentences):
        assert (s.id, s.source, s.reference, len(s.hypotheses)) == (e.id, e.source, e.reference, len(e.hypotheses))
        for h, g in zip(s.hypotheses, e.hypotheses):
            assert (h.rank, h.text, h.tokenized, h.score, h.length) == (g.rank, g.text, g.tokenized, g.score, g.length)
            np.testing.assert_equal(h.su, g.su)  # NaN == NaN here
            assert sorted(h.tu) == sorted(g.tu) and len(h.tu) == 2
            for measure in h.tu:
                np.testing.assert_array_equal(h.tu[measure], g.tu[measure])


def test_uncertainty_path_for():
    assert uncertainty_path_for("out/generate-test.txt") == Path("out/uncertainty-test.txt")
    assert uncertainty_path_for(Path("/r/generate-valid1.de-en.txt")) == Path("/r/uncertainty-valid1.de-en.txt")
    assert uncertainty_path_for("out/test.txt") is None
    assert uncertainty_path_for("out/generate-test.log") is None


def test_results_path_sibling_file_is_read(tmp_path):
    single = read_generate_output(write(tmp_path, BASE, "stdout.txt"), "test")  # every line in one stream
    assert single.uncertainty_path is None
    generate, uncertainty, _ = write_split(tmp_path)
    run = read_generate_output(generate)
    assert run.path == str(generate) and run.uncertainty_path == str(uncertainty)
    assert run.warnings == []
    assert_same_run(run, single)
    # the main job's call: no uncertainty required, the sibling is still read
    lean = read_generate_output(generate, require_uncertainty=False, allow_missing_ids=True, load_token_values=False)
    assert lean.header == single.header and lean.sentences[2].hypotheses[0].tokenized == "the hyp@@ two"
    assert lean.sentences[2].hypotheses[0].tu == {}


def test_explicit_uncertainty_file(tmp_path):
    single = read_generate_output(write(tmp_path, BASE, "single.txt"), "test")
    generate, uncertainty, _ = write_split(tmp_path, generate_name="gen.out", uncertainty_name="unc.out")
    assert uncertainty_path_for(generate) is None
    with pytest.raises(GenerateOutputError, match="no #SU-columns header"):
        read_generate_output(generate)  # no sibling convention for this name
    for given in (uncertainty, str(uncertainty)):
        run = read_generate_output(generate, "test", uncertainty_path=given)
        assert run.uncertainty_path == str(uncertainty)
        assert_same_run(run, single)


def test_explicit_uncertainty_file_replaces_the_sibling(tmp_path):
    generate, _, _ = write_split(tmp_path)
    write(tmp_path, ["SU-0\tgarbage"], "uncertainty-test.txt")  # a stale sibling
    _, other, _ = write_split(tmp_path, generate_name="ignored.txt", uncertainty_name="other.txt")
    run = read_generate_output(generate, uncertainty_path=other)
    assert run.uncertainty_path == str(other) and run.sentences[1].hypotheses[1].su["score"] == 0.63


def test_explicit_uncertainty_file_missing(tmp_path):
    generate, _, _ = write_split(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(tmp_path / 'nope.txt'))}: no such file \(the "
                                                rf"uncertainty file of .*generate-test\.txt\)"):
        read_generate_output(generate, uncertainty_path=tmp_path / "nope.txt")


def test_missing_sibling_says_where_it_was_looked_for(tmp_path):
    generate, uncertainty, _ = write_split(tmp_path)
    uncertainty.unlink()
    with pytest.raises(GenerateOutputError) as err:
        read_generate_output(generate)
    msg = str(err.value)
    assert msg.startswith(f"{generate}: no #SU-columns header and no SU- line in {generate}, and there is no "
                          f"uncertainty file {uncertainty}")
    assert "--user-dir proxy_end2 --task translation_distillation" in msg
    run = read_generate_output(generate, require_uncertainty=False)
    assert run.header is None and run.uncertainty_path is None


def test_truncated_uncertainty_file(tmp_path):
    generate, uncertainty, lines = write_split(tmp_path)
    cut = lines.index("SU-1\t1\t3\t-1.9\t0.63\tnan")  # the last two SU- lines and their TU- lines are lost
    write(tmp_path, lines[:cut], uncertainty.name)
    generate_lines = generate.read_text().splitlines()
    with pytest.raises(GenerateOutputError) as err:
        read_generate_output(generate)
    msg = str(err.value)
    h1 = lineno(generate_lines, "H-1\t-0.5")
    assert msg.startswith(f"{generate}:{h1}: hypothesis (id=1, rank=0) has no SU- line (2 of 5 have none): the "
                          f"uncertainty file {uncertainty} may be cut short")


def test_uncertainty_file_cut_in_a_line_or_at_the_front(tmp_path):
    generate, uncertainty, lines = write_split(tmp_path)
    write(tmp_path, lines[:-1] + [lines[-1][:-4]], uncertainty.name)  # last TU- line: 2 of 3 values
    with pytest.raises(GenerateOutputError, match=rf"^{re.escape(str(uncertainty))}:{len(lines)}: TU- line for "
                                                  rf"\(id=1, rank=0, entropy_of_expected\) has 2 values"):
        read_generate_output(generate)
    write(tmp_path, lines[2:], uncertainty.name)  # the headers are lost
    with pytest.raises(GenerateOutputError, match=rf"^{re.escape(str(uncertainty))}:1: SU- line before any "
                                                  rf"#SU-columns header"):
        read_generate_output(generate)


def test_hypothesis_without_token_lines(tmp_path):
    generate, uncertainty, lines = write_split(tmp_path)
    write(tmp_path, [line for line in lines if not line.startswith("TU-0\t0\tentropy")], uncertainty.name)
    with pytest.raises(GenerateOutputError) as err:
        read_generate_output(generate, load_token_values=False)
    h0 = lineno(generate.read_text().splitlines(), "H-0\t")
    assert str(err.value).startswith(f"{generate}:{h0}: hypothesis (id=0, rank=0) has no TU- line for "
                                     f"entropy_of_expected, which the #TU-columns header names (1 of 10 have none)")


def test_errors_in_the_uncertainty_file_name_it(tmp_path):
    generate, uncertainty, lines = write_split(tmp_path)
    bad = lineno(lines, "SU-0")
    lines[bad - 1] += "\t0.5"
    write(tmp_path, lines, uncertainty.name)
    with pytest.raises(GenerateOutputError, match=rf"^{re.escape(str(uncertainty))}:{bad}: SU- line has 4 value "
                                                  rf"columns, the #SU-columns header on line 1 names 3"):
        read_generate_output(generate)


def test_uncertainty_lines_in_both_files(tmp_path):
    generate, uncertainty, lines = write_split(tmp_path)
    write(tmp_path, BASE, generate.name)  # the stdout-style file, and the sibling as well
    first = lineno(BASE, "SU-2\t0")
    with pytest.raises(GenerateOutputError) as err:
        read_generate_output(generate)
    assert str(err.value) == (
        f"{uncertainty}:{lineno(lines, 'SU-2')}: duplicate SU- line for (id=2, rank=0); first one on "
        f"{generate}:{first} (the same lines in both {generate} and {uncertainty}, or the two files from different "
        f"runs?)")
    # a header of another model in the second file
    write(tmp_path, without(BASE, *UNCERTAINTY_PREFIXES[1:]), generate.name)
    write(tmp_path, [lines[0].replace("prior_network", "ensemble")] + lines[1:], uncertainty.name)
    with pytest.raises(GenerateOutputError, match=rf"^{re.escape(str(uncertainty))}:1: second #SU-columns header "
                                                  rf"differs from the one on {re.escape(str(generate))}:2 "):
        read_generate_output(generate)


def test_fairseq_lines_in_the_uncertainty_file(tmp_path):
    generate, _, _ = write_split(tmp_path)
    stdout = write(tmp_path, BASE, "stdout.txt")  # every line: given by mistake as the uncertainty file
    with pytest.raises(GenerateOutputError, match=rf"^{re.escape(str(stdout))}:{lineno(BASE, 'S-2')}: fairseq's "
                                                  rf"line 'S-2\\tsource two' in the uncertainty file, which should "
                                                  rf"only have the #SU-columns/#TU-columns headers and SU-/TU- lines"):
        read_generate_output(generate, uncertainty_path=stdout)
    with pytest.raises(GenerateOutputError, match=r"fairseq's line 'Generate test with beam=2: BLEU4"):
        read_generate_output(generate, uncertainty_path=write(tmp_path, [GENERATE_LINE], "unc.txt"))
