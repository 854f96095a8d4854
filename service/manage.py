"""Operator commands: `python -m service.manage init` (migrate + register API_KEYS)."""

from __future__ import annotations

import argparse
import logging
import sys

from core import logs, migrate
from core.db import Database
from core.settings import Settings
from service.auth import ensure_api_key, new_key

log = logging.getLogger("trainsvc.manage")


def register_keys(settings: Settings, *, dev_key: bool = False) -> dict[str, str]:
    """Store API_KEYS (hashed). With none set and `dev_key`, create or reuse a development key."""
    keys = dict(settings.api_keys)
    if not keys and dev_key:
        path = settings.var_dir / "dev-api-key"
        if path.exists():
            key = path.read_text().strip()
        else:
            key = new_key()
            path.write_text(key + "\n")
            path.chmod(0o600)
        keys = {key: "dev"}
        log.info(
            "no API_KEYS set: the development key for tenant 'dev' is %s (saved in %s)", key, path
        )
    database = Database(settings.database_url, settings.database_timeout_seconds)
    try:
        with database.begin() as session:
            for key, tenant in keys.items():
                ensure_api_key(session, tenant, key)
    finally:
        database.dispose()
    return keys


def init(settings: Settings, *, dev_key: bool = False) -> None:
    """Apply migrations and register keys: safe to run on every start."""
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    register_keys(settings, dev_key=dev_key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.manage")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init", help="apply migrations and register API_KEYS")
    create = commands.add_parser("create-key", help="create an API key for a tenant and print it")
    create.add_argument("tenant")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    logs.configure(settings.log_format, settings.log_level)
    if args.command == "init":
        init(settings)
    else:
        key = new_key()
        register_keys(settings.with_overrides(api_keys={key: args.tenant}))
        print(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
