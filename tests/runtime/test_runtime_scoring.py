"""How label scoring splits rows into passes (the scores themselves are checked against PEFT in test_runtime_hub)."""

from __future__ import annotations

import pytest

from adapterhub.scoring import chunks


@pytest.mark.parametrize("label_counts, batch_size, expected", [
    ([3, 3, 3], 32, [[0, 1, 2]]),  # everything fits one pass
    ([3, 3, 3], 6, [[0, 1], [2]]),  # 6 label rows per pass
    ([6, 3, 3], 5, [[0], [1], [2]]),  # a row with more labels than the limit still runs, alone
    ([2, 6, 2, 2], 8, [[0, 1], [2, 3]]),  # rows of different tasks share a pass
    ([], 8, []),
])
def test_rows_are_grouped_by_label_rows_per_pass(label_counts, batch_size, expected):
    assert chunks(label_counts, batch_size) == expected
