"""The status view of per-partition watermarks: which partition is slowest and by how much."""

from __future__ import annotations

from flowsql.server.job import slowest_partition


def test_one_partition_has_no_slowest() -> None:
    assert slowest_partition({}) == (None, None)
    assert slowest_partition({0: 5_000}) == (None, None)


def test_the_lowest_watermark_is_the_slowest_and_its_lag_is_to_the_highest() -> None:
    assert slowest_partition({0: 9_000, 1: 4_000, 2: 7_500}) == (1, 5_000)


def test_a_partition_that_sent_nothing_is_slowest_with_no_lag_figure() -> None:
    assert slowest_partition({0: 9_000, 1: None, 2: 7_500}) == (1, None)


def test_ties_go_to_the_lowest_partition_number() -> None:
    assert slowest_partition({3: 1_000, 1: 1_000}) == (1, 0)
