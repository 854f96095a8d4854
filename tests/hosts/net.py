"""Network namespaces joined through a bridge: hosts whose links a test can cut and heal.

Every name the harness makes starts with `PREFIX` and the creating process's id, so a later
run can remove what a crashed one left (its process is gone) without touching anything else.
Hosts sit on 10.231.0.0/24 behind a bridge in a "switch" namespace; the test driver (in the
root namespace) reaches one chosen host over a point-to-point veth of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import suppress
from dataclasses import dataclass, field

PREFIX = "tsh"
SUBNET = "10.231.0"
DRIVER_NET = "10.231.1"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def why_unusable() -> str | None:
    """None if namespaces can be made here; else why not (a test's skip reason)."""
    if os.geteuid() != 0:
        return "the multi-host harness needs root (it makes network namespaces)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    for tool in ("redis-server", "initdb", "postgres", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (the data host runs its own)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` does not work here: {made.stderr.strip()}"
    run("ip", "netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespace_pids(ns: str) -> list[int]:
    out = run("ip", "netns", "pids", ns, check=False).stdout.split()
    return [int(p) for p in out if p.isdigit()]


def kill_namespace(ns: str) -> None:
    """SIGKILL whatever still runs in one of our namespaces, then delete it."""
    import signal
    import time

    for _ in range(3):
        pids = namespace_pids(ns)
        if not pids:
            break
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    run("ip", "netns", "del", ns, check=False)


def stale_owner(name: str) -> bool:
    """`name` is one of ours (`tsh<pid>...`) and the process that made it has gone."""
    if not name.startswith(PREFIX):
        return False
    owner = name[len(PREFIX) :].split("-", 1)[0]
    return owner.isdigit() and not _alive(int(owner))


def remove_stale() -> list[str]:
    """Delete our namespaces (and data folders) whose creating process has gone (a crashed
    earlier run)."""
    import tempfile
    from pathlib import Path

    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-data-*"):
        if stale_owner(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
    removed: list[str] = []
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if stale_owner(name):
            kill_namespace(name)
            removed.append(name)
    return removed


@dataclass
class Network:
    """A switch and the hosts plugged into it; `cut`/`heal` take a host's link down and up."""

    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}")
    hosts: dict[str, str] = field(default_factory=dict)  # name -> address
    driver_address: str = ""  # where the driver reaches the host given to `connect_driver`
    _made: list[str] = field(default_factory=list)

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def start(self) -> Network:
        remove_stale()
        switch = self.ns("sw")
        self._add_namespace(switch)
        run("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", switch, "link", "set", "br0", "up")
        return self

    def _add_namespace(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self._made.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def add_host(self, host: str) -> str:
        """A namespace with eth0 on the switch; returns its address."""
        ns, switch = self.ns(host), self.ns("sw")
        self._add_namespace(ns)
        address = f"{SUBNET}.{len(self.hosts) + 2}"
        port = f"p-{host}"[:15]
        # Made inside the switch namespace, then one end moved: nothing appears in the root one.
        run("ip", "-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0")
        run("ip", "-n", switch, "link", "set", "eth0", "netns", ns)
        run("ip", "-n", switch, "link", "set", port, "master", "br0", "up")
        run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        self.hosts[host] = address
        return address

    def connect_driver(self, host: str) -> str:
        """A veth from the root namespace into `host` (its own /30): the driver's way in, which
        stays up when the host's switch link is cut. Returns the host's address on it."""
        block = (os.getpid() % 60) * 4
        ours, theirs = f"{DRIVER_NET}.{block + 1}", f"{DRIVER_NET}.{block + 2}"
        outside = f"{self.tag}d"[:15]
        ns = self.ns(host)
        run("ip", "-n", ns, "link", "add", "drv0", "type", "veth", "peer", "name", outside)
        run("ip", "-n", ns, "link", "set", outside, "netns", "1")
        run("ip", "-n", ns, "addr", "add", f"{theirs}/30", "dev", "drv0")
        run("ip", "-n", ns, "link", "set", "drv0", "up")
        run("ip", "addr", "add", f"{ours}/30", "dev", outside)
        run("ip", "link", "set", outside, "up")
        self.driver_address = theirs
        return theirs

    def cut(self, host: str) -> None:
        """Take the host's switch port down: it can reach no other host, nor they it."""
        run("ip", "-n", self.ns("sw"), "link", "set", f"p-{host}"[:15], "down")

    def heal(self, host: str) -> None:
        run("ip", "-n", self.ns("sw"), "link", "set", f"p-{host}"[:15], "up")

    def exec_argv(self, host: str) -> list[str]:
        """The prefix that runs a command inside the host (`ip netns exec` execs, same pid)."""
        return ["ip", "netns", "exec", self.ns(host)]

    def stop(self) -> None:
        # The driver's veth lives in the root namespace: it goes with its peer's namespace.
        for name in reversed(self._made):
            kill_namespace(name)
        self._made.clear()
