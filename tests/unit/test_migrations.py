"""The migrations are one chain, and at its head the schema is what core/models.py declares."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from core import migrate
from core.models import Base
from tests.support import scratch_database


def test_the_migrations_form_one_chain_numbered_in_order() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    assert script.get_heads() == [script.get_current_head()], "more than one head"
    chain = [rev.revision for rev in script.walk_revisions()][::-1]
    assert chain == [f"{n:04d}" for n in range(1, len(chain) + 1)]
    for rev in script.walk_revisions():
        assert Path(rev.path).name.startswith(rev.revision + "_"), rev.path


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_migrated_schema_is_the_models_schema(kind: str, tmp_path: Path) -> None:
    with ExitStack() as cleanup:
        url = scratch_database(kind, tmp_path, cleanup)
        if url is None:
            pytest.skip("PostgreSQL does not answer here")
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(connection)
                differences = compare_metadata(context, Base.metadata)
        finally:
            engine.dispose()
        assert differences == []
