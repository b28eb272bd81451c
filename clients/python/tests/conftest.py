"""Fixtures: one real local network (`ambient up`) for the whole session, on free loopback ports,
and a client of it. Nothing is mocked.

The binary is ``$AMBIENT_BIN``, else ``${CARGO_TARGET_DIR:-<repo>/target}/debug/ambient``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from ambient_vcp import Client, Connection

from support import AGENTS, REPO, TESTDATA


def ambient_bin() -> Path:
    if os.environ.get("AMBIENT_BIN"):
        return Path(os.environ["AMBIENT_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "ambient"


@dataclass
class Network:
    """A running `ambient up`."""

    data_dir: Path
    connection_path: Path
    connection: Connection
    process: "subprocess.Popen[bytes]"
    log: Path
    binary: Path


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def running_up(binary: Path, data_dir: Path, *args: str) -> Iterator[Network]:
    """`ambient up` with ``args``, on free loopback ports, until the block ends."""
    log = data_dir.parent / f"{data_dir.name}.log"
    env = dict(os.environ, RUST_LOG="warn,rumqttd=off", NO_COLOR="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "up", "--data-dir", str(data_dir), "--agents", str(AGENTS),
             "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", *args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
    path = data_dir / "connection.json"
    try:
        deadline = time.monotonic() + 90
        conn = None
        while conn is None:
            if proc.poll() is not None:
                pytest.fail(f"`ambient up` exited with {proc.returncode}:\n{_log_tail(log)}",
                            pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"`ambient up` wrote no connection.json in 90 s:\n{_log_tail(log)}",
                            pytrace=False)
            # The file appears before its content is written: read until it parses.
            if "is up" in log.read_text(errors="replace"):
                try:
                    conn = Connection.load(path)
                except (OSError, ValueError):
                    pass
            time.sleep(0.1)
        with Client.from_connection(path) as c:
            c.wait_for_nodes(AGENTS, timeout=60)
        yield Network(data_dir, path, conn, proc, log, binary)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    binary = ambient_bin()
    if not binary.exists():
        pytest.fail(f"no ambient binary at {binary}: build it with `cargo build -p ambient-cli` "
                    f"or set AMBIENT_BIN", pytrace=False)
    with running_up(binary, tmp_path_factory.mktemp("ambient-up")) as net:
        yield net


@pytest.fixture(scope="session")
def client(network: Network) -> Iterator[Client]:
    with Client.from_connection(network.connection_path) as c:
        yield c


@pytest.fixture(scope="session")
def sum_wasm() -> bytes:
    """`clients/testdata/sum.wasm`: prints {"sum": N} of the digit runs of its stdin."""
    return (TESTDATA / "sum.wasm").read_bytes()


@pytest.fixture(scope="session")
def spin_wasm() -> bytes:
    """`clients/testdata/spin.wasm`: loops for ever."""
    return (TESTDATA / "spin.wasm").read_bytes()

