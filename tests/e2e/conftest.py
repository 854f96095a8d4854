"""End-to-end tests run against the integration stack (a real worker, broker and database)."""

from tests.integration.conftest import broker_url, stack

__all__ = ["broker_url", "stack"]
