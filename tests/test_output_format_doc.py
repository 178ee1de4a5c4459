"""docs/output-format.md lists exactly the columns and token measures the code writes, in output order."""
import re
from pathlib import Path

import pytest

from proxy_end2.uncertainty.sequence import sequence_measure_names, token_measure_names

DOC = Path(__file__).resolve().parents[1] / "docs" / "output-format.md"


def _table_names(section: str, caption: str) -> list:
    """First-column names (in backticks) of the table that follows ``caption`` inside ``### section``."""
    text = DOC.read_text(encoding="utf-8")
    body = text.split(f"### {section}\n", 1)[1].split("\n### ", 1)[0]
    table = body.split(caption, 1)[1].split("\n\n", 2)[1]
    return [re.match(r"\| `([a-z_0-9]+)`", row).group(1) for row in table.splitlines()[2:]]


@pytest.mark.parametrize("section, kind", [("Prior Network", "prior_network"), ("Ensemble", "ensemble")])
def test_documented_columns_are_the_written_columns(section, kind):
    assert _table_names(section, "Sequence columns") == list(sequence_measure_names(kind))
    assert _table_names(section, "Token measures") == list(token_measure_names(kind))
