"""CSV header checks: the column limit first, then one pass; long and NUL names refused."""

from __future__ import annotations

import pytest

from core.uploads import CsvError, parse_csv


def header_error(header: str, label: str = "y") -> list[dict[str, str]]:
    with pytest.raises(CsvError) as info:
        parse_csv((header + "\n1,2\n3,4\n").encode(), label, max_rows=10)
    return info.value.details


def test_too_many_columns_is_the_one_problem_reported() -> None:
    details = header_error(",".join(["a"] * 60_000))  # all repeated too: not counted
    message = "the header has 60,000 columns; at most 10,000 feature columns and the label"
    assert details == [{"field": "line 1", "message": message}]


def test_repeated_names_are_listed_once_each_and_the_list_is_cut() -> None:
    message = header_error(",".join(f"c{i % 30}" for i in range(9_000)) + ",y")[0]["message"]
    assert message.startswith("column names repeat: c0, c1, c10,")
    assert message.endswith(", …") and message.count(",") == 20


def test_long_and_nul_column_names_are_refused() -> None:
    long_name = "x" * 201
    assert "longer than 200 characters" in header_error(f"{long_name},y")[0]["message"]
    assert "NUL" in header_error("a\x00b,y")[0]["message"]
