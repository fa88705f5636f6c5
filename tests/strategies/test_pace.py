"""What a search says of its duration: durations as a person reads them, and each finished fold's pace."""

from __future__ import annotations

import pytest

from nas.reporting import format_duration
from nas.strategies.protocol import pace


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (42.4, "42 s"),
        (12 * 60 + 10, "12 min"),
        (3 * 3600 + 20 * 60 + 5, "3 h 20 min"),
        (2 * 86400 + 5.5 * 3600, "2 d 5 h"),
    ],
)
def test_durations_read_as_a_person_would_say_them(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_a_finished_fold_tells_the_time_of_the_folds_left_at_the_mean_pace_so_far() -> None:
    assert pace(3, [600.0, 1200.0], 4) == "fold 3: finished in 20 min; 4 folds left, about 1 h 0 min at this pace"
    assert pace(0, [95.0], 1) == "fold 0: finished in 2 min; 1 fold left, about 2 min at this pace"
    assert pace(5, [30.0, 50.0], 0) == "fold 5: finished in 50 s; no fold left"
