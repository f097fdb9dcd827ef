"""The label-fit gate with its real encoder (the bundled MiniLM) on real TREC rows: the rows
the matrix's TREC unit judges by (seed 0: 64 seed rows and 200 validation rows), and teacher
rows of that run whose labels were judged by hand (RESULTS.md, "label fit"). No engine: the
encoder loads in this process, as it does in the driver."""

from pathlib import Path

import pyarrow as pa
import pytest

from engine.config import LabelFitConfig, load_config
from engine.stages.augment import label_fit_gate
from engine.tasks import build_task

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TREC = ROOT.parent / "shared" / "data" / "trec"

# (text, the label the teacher's row carried, kept?) from the matrix's TREC run, seed 0
ROWS = [("What is the capital of France?", "ENTY", False),           # reads as LOC
        ("What is the official name of Japan's largest city?", "DESC", False),  # LOC
        ("Where is the place of origin of bocci ?", "LOC", True),
        ("Who is the latest Marvel superhero actor ?", "HUM", True),
        ("What is SAFER?", "ABBR", True)]  # ABBR: 5 real rows, fewer than vote: not judged


def test_the_real_encoder_rejects_off_label_teacher_rows_and_keeps_fitting_ones():
    if not TREC.is_dir():
        pytest.skip(f"real TREC data not found at {TREC}")
    cfg = load_config(str(ROOT / "jobs" / "configs" / "matrix" / "trec.yaml"),
                      [f"tasks.0.data.train={TREC / 'train.jsonl'}",
                       f"tasks.0.data.test={TREC / 'test.jsonl'}"])
    task = build_task(cfg.tasks[0], 0)
    seed, _, validation, _ = task.splits()
    real = seed + validation
    assert len(real) == 264
    rows = pa.table({"input": [r["input"] for r in real], "label": [r["label"] for r in real]})
    gate = label_fit_gate(task, rows, LabelFitConfig(enabled=True))
    reasons = gate.reasons([t for t, _, _ in ROWS], [label for _, label, _ in ROWS])
    assert [not reason for reason in reasons] == [kept for _, _, kept in ROWS], reasons
    assert "are LOC" in reasons[0] and "are LOC" in reasons[1]
