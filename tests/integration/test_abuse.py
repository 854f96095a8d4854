"""The abuse suite's short form (`make abuse` runs it at full size): every case answers as it
should, no 5xx, on a real gunicorn + worker + Redis stack, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.abuse import CASES, Size, Stack, run_case, stack_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def abuse_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    try:
        with stack_for(request.param) as stack:
            yield stack
    except LookupError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("case", list(CASES))
def test_case(abuse_stack: Stack, case: str) -> None:
    figures = run_case(abuse_stack, case, Size.short())
    print("\n" + figures.line())
    assert figures.ok, figures.line()
