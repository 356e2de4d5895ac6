"""The state file and the last-run record: written by json's C encoder one line per
runner (files.json_lines), read back the same."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from register_runner.files import json_lines

scalars = st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(), values, max_size=6))
def test_what_is_written_reads_back_equal(raw):
    assert json.loads(json_lines(raw)) == raw


def test_one_line_per_runner():
    raw = {
        "version": 2,
        "runners": {"b": {"id": 2, "url": "https://g"}, "a": {"id": 1, "url": "https://g"}},
        "pending_deletes": [{"id": 3}, {"id": 4}],
        "unwritten": {},
    }
    assert json_lines(raw).splitlines() == [
        "{",
        ' "pending_deletes": [',
        '  {"id": 3},',
        '  {"id": 4}',
        " ],",
        ' "runners": {',
        '  "a": {"id": 1, "url": "https://g"},',
        '  "b": {"id": 2, "url": "https://g"}',
        " },",
        ' "unwritten": {},',
        ' "version": 2',
        "}",
    ]
