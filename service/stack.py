"""`make run`: migrate, register API keys, find a broker, then run a worker and the API.

Runs in the foreground; Ctrl-C (or SIGTERM) stops every process it started.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import redis

from core import logs
from core.settings import Settings
from service import manage

log = logging.getLogger("trainsvc.stack")


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def choose_broker(settings: Settings, procs: list[subprocess.Popen[bytes]]) -> str:
    """The configured Redis if it answers, else a local redis-server, else the embedded broker."""
    if settings.broker_url:
        log.info("broker: %s (BROKER_URL)", settings.broker_url)
        return settings.broker_url
    if redis_answers(settings.redis_url):
        log.info("broker: Redis at %s", settings.redis_url)
        return settings.redis_url
    server = shutil.which("redis-server")
    if server:
        parsed = urlparse(settings.redis_url)
        port = parsed.port or 6379
        if parsed.hostname not in ("localhost", "127.0.0.1", None):
            port = free_port()
        command = redis_command(server, port, settings.var_dir.resolve())
        procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(50):
            if redis_answers(url):
                log.info("broker: started a local redis-server at %s (stops with make run)", url)
                return url
            time.sleep(0.1)
        log.warning("the local redis-server did not answer; using the embedded broker")
    folder = (settings.var_dir / "broker").resolve()
    log.info(
        "broker: embedded filesystem broker in %s (single machine only; no Redis found)", folder
    )
    return f"filesystem://{folder}"


def redis_command(server: str, port: int, folder: Path) -> list[str]:
    """A throw-away local redis-server on 127.0.0.1:`port` (nothing saved to disk)."""
    options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    return [server, "--port", str(port), *options]


def api_command(host: str, port: int | str, *options: str) -> list[str]:
    """Gunicorn with the shipped configuration, serving the API on `host`:`port`."""
    config = ["--config", "python:service.gunicorn_conf", "--bind", f"{host}:{port}"]
    return [sys.executable, "-m", "gunicorn", *config, *options, "service.app:create_app()"]


def worker_command(queue: str, concurrency: int) -> list[str]:
    """The command that runs a Celery worker on `queue` with `concurrency` pool processes."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.main",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "--queues",
        queue,
        "--without-gossip",
        "--without-mingle",
    ]


def shared_secret(var_dir: Path) -> str:
    """The dashboard's cookie-signing key, made once and kept in var/secret-key."""
    path = var_dir / "secret-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def main() -> int:
    # A person reads this terminal: plain lines unless LOG_FORMAT asks otherwise (the
    # production default, in the compose file too, is one JSON object per line).
    settings = Settings.from_env(defaults={"LOG_FORMAT": "text"})
    logs.configure(settings.log_format, settings.log_level)
    log.info("database: %s", settings.database_url)
    manage.init(settings, dev_key=True)

    procs: list[subprocess.Popen[bytes]] = []

    def stop(*_args: object) -> None:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 15
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()

    def interrupt(*_args: object) -> None:
        raise KeyboardInterrupt

    # Installed explicitly: a shell starting us in the background would have SIGINT ignored.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        env = dict(
            os.environ,
            BROKER_URL=choose_broker(settings, procs),
            DATABASE_URL=settings.database_url,
            LOG_FORMAT=settings.log_format,
            SECRET_KEY=settings.secret_key or shared_secret(settings.var_dir),
            # Where the API's gunicorn workers share their metrics (emptied when gunicorn starts).
            PROMETHEUS_MULTIPROC_DIR=str((settings.var_dir / "prometheus").resolve()),
        )
        procs.append(
            subprocess.Popen(
                worker_command(settings.queue_name, settings.worker_concurrency), env=env
            )
        )
        host, port = settings.host, settings.port
        procs.append(
            subprocess.Popen(
                api_command(host, port),
                env=env,
            )
        )
        log.info("API on http://%s:%s  (Ctrl-C stops everything)", host, port)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        failed = [p.args for p in procs if p.poll() is not None]
        log.error("a process exited (%s); stopping the rest", failed)
        return 1
    except KeyboardInterrupt:
        log.info("stopping")
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
