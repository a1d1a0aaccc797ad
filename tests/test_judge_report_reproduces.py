"""`monitor judge eval` on the shared files reproduces the shipped heads' rows of the published test report.

README's judge table is read off ``docs/judge-v2-test.md``; this reruns the evaluation of the shipped heads
(the default judge's prompt and refusal verdicts) on the same test rows and checks every row of theirs: the
same rows and positives, AUROC and AUPRC within noise (an embedding moves by about 1e-7 with its batch's
make-up, and a BLAS build by more).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.judge.cli import judge_app
from monitor.judge.heads import DEFAULT_ARTIFACT, HeadsJudge

REPORT = Path(__file__).resolve().parents[1] / "docs" / "judge-v2-test.md"
TOLERANCE = 0.01
pytestmark = pytest.mark.slow


def rows_of(report: str, judge: str) -> dict[tuple[str, str], dict[str, str]]:
    """Table rows of ``judge`` in a report, keyed by (section heading, output), as column -> cell."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    section, columns = "", []
    for line in report.splitlines():
        if line.startswith("### "):
            section = line[4:].strip()
        elif line.startswith("| output |"):
            columns = [c.strip() for c in line.strip("|").split("|")]
        elif line.startswith("| ") and columns:
            cells = dict(zip(columns, (c.strip() for c in line.strip("|").split("|"))))
            if cells.get("judge") == judge:
                rows[(section, cells["output"])] = cells
    return rows


def test_rows_of_reads_a_report_table():
    text = "### Refusal\n\n| output | judge | AUROC |\n|---|---|---:|\n| all files | j-1 | 0.900 |\n| all files | k-2 | 0.5 |\n"
    assert rows_of(text, "j-1") == {("Refusal", "all files"): {"output": "all files", "judge": "j-1", "AUROC": "0.900"}}


def test_the_published_heads_rows_reproduce(shared_data, tmp_path):
    version = HeadsJudge.load(DEFAULT_ARTIFACT).version
    published = rows_of(REPORT.read_text(), version)
    assert len(published) > 40, f"{REPORT} has no rows of the shipped heads {version}: rerun `monitor judge eval`"
    out = tmp_path / "report.md"
    result = CliRunner().invoke(judge_app, ["eval", "--data", str(shared_data), "--artifact", str(DEFAULT_ARTIFACT),
                                            "--no-baselines", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0] == REPORT.read_text().splitlines()[0]  # the same rows (ids digest)
    fresh = rows_of(out.read_text(), version)
    assert fresh.keys() == published.keys()
    for key, cells in published.items():
        if not key[0].startswith("By second-opinion stratum"):  # a row at the stratum's edge may move across it
            assert fresh[key]["n (pos)"] == cells["n (pos)"], key
        for metric in ("AUROC", "AUPRC"):
            if cells[metric] != "–":
                assert float(fresh[key][metric]) == pytest.approx(float(cells[metric]), abs=TOLERANCE), (key, metric)
