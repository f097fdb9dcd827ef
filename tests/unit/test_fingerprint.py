"""engine/fingerprint.py: the same values give the same hash whatever the Arrow layout; any
change of a value, of the rows' order or of a part gives another."""

import pyarrow as pa

from engine.fingerprint import inputs_fingerprint

ROWS = [{"input": f"row {i}", "label": "a" if i % 2 else "b"} for i in range(5)]


def test_a_table_hashes_by_its_values_not_its_chunks():
    whole = pa.Table.from_pylist(ROWS)
    chunked = pa.concat_tables([pa.Table.from_pylist(ROWS[:2]), pa.Table.from_pylist(ROWS[2:])])
    assert chunked.column("input").num_chunks == 2
    assert inputs_fingerprint("train", whole, 1) == inputs_fingerprint("train", chunked, 1)
    assert inputs_fingerprint(whole) == inputs_fingerprint(pa.Table.from_pylist(ROWS).slice(0))


def test_any_difference_changes_the_hash():
    base = inputs_fingerprint("train", pa.Table.from_pylist(ROWS), 1, None)
    relabelled = [dict(r) for r in ROWS]
    relabelled[3]["label"] = "b"
    others = [
        inputs_fingerprint("train", pa.Table.from_pylist(relabelled), 1, None),
        inputs_fingerprint("train", pa.Table.from_pylist(ROWS[::-1]), 1, None),  # order
        inputs_fingerprint("train", pa.Table.from_pylist(ROWS[:4]), 1, None),
        inputs_fingerprint("train", pa.Table.from_pylist(ROWS), 2, None),  # the seed
        inputs_fingerprint("train", pa.Table.from_pylist(ROWS), 1, pa.Table.from_pylist(ROWS)),
        inputs_fingerprint("predict", pa.Table.from_pylist(ROWS), 1, None),
    ]
    assert len({base, *others}) == 1 + len(others)
