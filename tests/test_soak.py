"""Soak under rotation: one Transport and one AsyncTransport under load while the client
certificate changes on disk every 200 ms.

8 threads share one ``httpx.Client`` (one ``dockercerts.Transport``) and 64 tasks share one
``httpx.AsyncClient`` (one ``dockercerts.AsyncTransport``), both with ``refresh=0.05``,
sending ``GET /v2/`` to one ``MTLSServer`` (``reject="tls"``) for a fixed time. Meanwhile a
rotator swaps the host directory's client certificate between two pairs, both accepted by
the server:

* ``atomic``: the Kubernetes way, a new ``..<timestamp>`` payload and one ``rename(2)`` of the
  ``..data`` symlink (``HostDir.rotate_kubernetes``): **zero** failed requests;
* ``in-place``: ``client.cert`` then ``client.key`` rewritten in place (truncate + write,
  with a short pause between the two files), so readers can see torn or mismatched pairs:
  a failed request is retried once by the test and must then succeed (retried and
  recovered); none may stay failed.

Both: the server must have seen both certificates (the rotation really took effect), the last
request must carry the last certificate written, and after the clients are closed and the
server stopped, open file descriptors, threads, live TLS objects and RSS must be back to
where they were, within a small tolerance.

``DOCKERCERTS_SOAK=1`` runs each for 60 s (``DOCKERCERTS_SOAK_SECONDS`` overrides both
profiles). ``DOCKERCERTS_SOAK_FIGURES=<file>`` writes each run's figures into that generated
file (``nox -s soak`` gives ``docs/soak-figures.md``); without it nothing is written, so a test
run leaves the work tree as it found it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import anyio
import httpx
import pytest

import dockercerts
from dockercerts import scan
from dockercerts.testing import CA, CertsD, HostDir, Leaf, MTLSServer

pytestmark = pytest.mark.reliability

SOAK = os.environ.get("DOCKERCERTS_SOAK", "") not in ("", "0")
DURATION = float(os.environ.get("DOCKERCERTS_SOAK_SECONDS", "60" if SOAK else "4"))
FIGURES_FILE = os.environ.get("DOCKERCERTS_SOAK_FIGURES", "")
RECORD = FIGURES_FILE != ""
THREADS = 8
TASKS = 64
ROTATE_EVERY = 0.2
REFRESH = 0.05
MAX_REQUESTS_PER_WORKER = 1_000_000  # a bound on every loop besides the clock

# Tolerances for "nothing leaked": a few fds (a lazily opened /dev/urandom, a log file), no
# thread, and RSS growth that a leak of one context or connection per request would dwarf
# (~10 KB each, times tens of thousands of requests).
FD_TOLERANCE = 3
RSS_TOLERANCE_MB = 64 if not SOAK else 96


# --------------------------------------------------------------------------- measurements


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except FileNotFoundError:  # pragma: no cover - not Linux
        return -1


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (FileNotFoundError, ValueError, OSError):  # pragma: no cover - not Linux
        return -1.0


def live(kinds: tuple[type, ...]) -> int:
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kinds))


TLS_KINDS = (ssl.SSLSocket, ssl.SSLObject, ssl.SSLContext)
TRANSPORT_KINDS = (httpx.HTTPTransport, httpx.AsyncHTTPTransport)


@dataclass
class Usage:
    fds: int
    threads: frozenset[threading.Thread]
    rss_mb: float
    tls_objects: int
    transports: int

    @classmethod
    def now(cls) -> Usage:
        for _ in range(3):
            gc.collect()
        return cls(
            fds=open_fds(),
            threads=frozenset(threading.enumerate()),
            rss_mb=rss_mb(),
            tls_objects=live(TLS_KINDS),
            transports=live(TRANSPORT_KINDS),
        )


# --------------------------------------------------------------------------- the load


@dataclass
class Side:
    """What one side (threads or tasks) did."""

    requests: int = 0
    ok: int = 0
    failures: int = 0
    recovered: int = 0
    unrecovered: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def fail(self, what: str) -> None:
        self.failures += 1
        self.errors[what] = self.errors.get(what, 0) + 1


def describe(exc: BaseException) -> str:
    """The exception and its chain, by type, with the first message: enough to tell apart
    a rejection, a closed connection and a timeout in the figures."""
    chain, seen = [], set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen and len(chain) < 6:
        seen.add(id(current))
        chain.append(type(current).__name__)
        current = current.__cause__ or current.__context__
    return f"{' <- '.join(chain)}: {str(exc)[:100]}"


def sync_worker(client: httpx.Client, url: str, deadline: float, side: Side, lock: Any) -> None:
    for _ in range(MAX_REQUESTS_PER_WORKER):
        if time.monotonic() >= deadline:
            return
        outcome = "ok"
        try:
            status = client.get(url).status_code
            if status != 200:
                outcome = f"HTTP {status}"
        except Exception as exc:
            outcome = describe(exc)
        retried = None
        if outcome != "ok":
            try:
                retried = client.get(url).status_code
            except Exception as exc:
                retried = describe(exc)
        with lock:
            side.requests += 1
            if outcome == "ok":
                side.ok += 1
                continue
            side.fail(outcome)
            if retried == 200:
                side.recovered += 1
            else:
                side.unrecovered += 1
                side.errors[f"retry: {retried}"] = side.errors.get(f"retry: {retried}", 0) + 1


async def async_worker(client: httpx.AsyncClient, url: str, deadline: float, side: Side) -> None:
    for _ in range(MAX_REQUESTS_PER_WORKER):
        if time.monotonic() >= deadline:
            return
        outcome = "ok"
        try:
            status = (await client.get(url)).status_code
            if status != 200:
                outcome = f"HTTP {status}"
        except Exception as exc:
            outcome = describe(exc)
        side.requests += 1
        if outcome == "ok":
            side.ok += 1
            continue
        side.fail(outcome)
        try:
            retried: Any = (await client.get(url)).status_code
        except Exception as exc:
            retried = describe(exc)
        if retried == 200:
            side.recovered += 1
        else:
            side.unrecovered += 1
            side.errors[f"retry: {retried}"] = side.errors.get(f"retry: {retried}", 0) + 1


class Rotator:
    """Swaps the client pair every ``ROTATE_EVERY`` seconds until stopped."""

    def __init__(self, rotate: Callable[[int], None], tick: Callable[[], None]) -> None:
        self.rotate = rotate
        self.tick = tick
        self.count = 0
        self.last = 0  # index of the leaf written last (0 is the initial one)
        self.error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-rotator")

    def _run(self) -> None:
        try:
            limit = int(DURATION / ROTATE_EVERY) + 10
            for number in range(1, limit + 1):
                if self._stop.wait(ROTATE_EVERY):
                    return
                self.rotate(number % 2)
                self.last = number % 2
                self.count = number
                self.tick()
        except BaseException as exc:  # pragma: no cover - surfaced by stop()
            self.error = exc

    def __enter__(self) -> Rotator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error


def files_for(leaf: Leaf, server: MTLSServer) -> dict[str, bytes]:
    return {
        "ca.crt": server.server_ca.cert_pem,
        "client.cert": leaf.cert_pem,
        "client.key": leaf.key_pem(),
    }


def atomic(host: HostDir, leaves: tuple[Leaf, Leaf], server: MTLSServer) -> Callable[[int], None]:
    host.kubernetes(files_for(leaves[0], server))

    def rotate(index: int) -> None:
        host.rotate_kubernetes(files_for(leaves[index], server))

    return rotate


def in_place(host: HostDir, leaves: tuple[Leaf, Leaf], server: MTLSServer) -> Callable[[int], None]:
    host.ca(server.server_ca).pair("client", leaves[0])

    def rotate(index: int) -> None:
        leaf = leaves[index]
        with open(host / "client.cert", "wb") as handle:  # truncate, then write
            handle.write(leaf.cert_pem)
        time.sleep(0.002)  # a window with the new certificate and the old key
        with open(host / "client.key", "wb") as handle:
            handle.write(leaf.key_pem())

    return rotate


# --------------------------------------------------------------------------- the run


class CountingHandler(logging.Handler):
    """Counts dockercerts' records by level and keeps none of them.

    pytest's log capture keeps every record until the test ends, and whatever a record's
    arguments reference stays alive with it: while the soak runs, records go here instead,
    so the leak figures measure the library, not the harness.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Counter[str] = Counter()
        self.warnings: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] += 1
        if record.levelno >= logging.WARNING:
            # The message without paths and names: what kind of warning it was.
            text = record.getMessage().split(": ", 1)[-1]
            self.warnings[re.sub(r"/\S+|\d+", "#", text)[:90]] += 1


@contextlib.contextmanager
def counted_logs() -> Iterator[CountingHandler]:
    logger = logging.getLogger("dockercerts")
    handler = CountingHandler()
    saved = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = saved


@dataclass
class Figures:
    mode: str
    seconds: float
    rotations: int
    sync: Side
    tasks: Side
    handshakes: int
    subjects: dict[str, int]
    before: Usage
    after: Usage
    rss_mid_mb: float
    logs: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        total = self.sync.requests + self.tasks.requests
        return {
            "mode": self.mode,
            "seconds": round(self.seconds, 1),
            "rotations": self.rotations,
            "requests": total,
            "req_per_s": round(total / self.seconds) if self.seconds else 0,
            "sync_req_per_s": round(self.sync.requests / self.seconds) if self.seconds else 0,
            "async_req_per_s": round(self.tasks.requests / self.seconds) if self.seconds else 0,
            "failures": self.sync.failures + self.tasks.failures,
            "recovered": self.sync.recovered + self.tasks.recovered,
            "unrecovered": self.sync.unrecovered + self.tasks.unrecovered,
            "handshakes": self.handshakes,
            "fd_delta": self.after.fds - self.before.fds,
            # Threads started by the run and still alive; not a difference of counts, since
            # idle worker threads of earlier tests (anyio's, trio's) may end meanwhile.
            "thread_delta": len(self.after.threads - self.before.threads),
            "tls_object_delta": self.after.tls_objects - self.before.tls_objects,
            "transport_delta": self.after.transports - self.before.transports,
            "rss_delta_mb": round(self.after.rss_mb - self.before.rss_mb, 1),
            "rss_mid_to_end_mb": round(self.after.rss_mb - self.rss_mid_mb, 1),
            "sync_errors": self.sync.errors,
            "async_errors": self.tasks.errors,
            "subjects": self.subjects,
            "log_records": self.logs,
            "warnings": self.warnings,
        }


def soak(
    mode: str,
    root: Path,
    leaves: tuple[Leaf, Leaf],
    client_ca: CA,
    duration: float,
) -> Figures:
    server = MTLSServer(client_ca=client_ca, reject="tls", max_workers=64, idle_timeout=30)
    server.start()
    try:
        host = CertsD(root).host(server.host)
        rotate = (atomic if mode == "atomic" else in_place)(host, leaves, server)
        url = server.url + "/v2/"
        sync_side, task_side = Side(), Side()
        lock = threading.Lock()
        subjects: Counter[str] = Counter()
        handshakes = [0]

        def tick() -> None:
            # Keep the server's records small, so RSS measures the clients, not the log.
            records, done = server.requests, server.handshakes
            server.reset_counters()
            subjects.update(r.client_subject or "(none)" for r in records)
            handshakes[0] += done

        transport = dockercerts.Transport(root=root, refresh=REFRESH)
        client = httpx.Client(transport=transport, timeout=20)
        rss_mid = [0.0]
        try:
            assert client.get(url).status_code == 200  # the first load, before the clock
            started = time.monotonic()
            deadline = started + duration
            with Rotator(rotate, tick) as rotator:
                workers = [
                    threading.Thread(
                        target=sync_worker, args=(client, url, deadline, sync_side, lock)
                    )
                    for _ in range(THREADS)
                ]
                for worker in workers:
                    worker.start()

                async def tasks() -> None:
                    atransport = dockercerts.AsyncTransport(root=root, refresh=REFRESH)
                    # Two statements: parenthesised context managers need Python 3.10.
                    async with httpx.AsyncClient(transport=atransport, timeout=20) as aclient:  # noqa: SIM117
                        async with anyio.create_task_group() as group:
                            for _ in range(TASKS):
                                group.start_soon(async_worker, aclient, url, deadline, task_side)
                            await anyio.sleep(duration / 2)
                            rss_mid[0] = rss_mb()

                anyio.run(tasks)
                for worker in workers:
                    worker.join(duration + 30)
                assert not any(w.is_alive() for w in workers)
            elapsed = time.monotonic() - started
            rotations, last = rotator.count, rotator.last
            # After the last rotation, within `refresh` both transports send the last leaf.
            time.sleep(REFRESH * 3)
            tick()
            assert client.get(url).status_code == 200

            async def one() -> int:
                atransport = dockercerts.AsyncTransport(root=root, refresh=REFRESH)
                async with httpx.AsyncClient(transport=atransport, timeout=20) as aclient:
                    return (await aclient.get(url)).status_code

            assert anyio.run(one) == 200
            final = {r.client_subject for r in server.requests}
            assert final == {leaves[last].subject}, (final, leaves[last].subject)
        finally:
            client.close()
        tick()
    finally:
        server.stop()
    return Figures(
        mode=mode,
        seconds=elapsed,
        rotations=rotations,
        sync=sync_side,
        tasks=task_side,
        handshakes=handshakes[0],
        subjects=dict(subjects),
        before=Usage(0, 0, 0.0, 0, 0),
        after=Usage(0, 0, 0.0, 0, 0),
        rss_mid_mb=rss_mid[0],
    )


@pytest.fixture(scope="module")
def rotation_leaves(mtls_ca: CA) -> tuple[Leaf, Leaf]:
    return mtls_ca.issue_client("rotation-a"), mtls_ca.issue_client("rotation-b")


@pytest.fixture(scope="module")
def warmed_up(
    tmp_path_factory: pytest.TempPathFactory, rotation_leaves: tuple[Leaf, Leaf], mtls_ca: CA
) -> None:
    """One short run first: imports, the system trust cache, anyio's backend, thread-locals."""
    root = tmp_path_factory.mktemp("soak-warmup") / "certs.d"
    with counted_logs():
        soak("atomic", root, rotation_leaves, mtls_ca, duration=0.3)


@pytest.mark.parametrize("mode", ["atomic", "in-place"])
def test_soak_with_rotation(
    mode: str,
    warmed_up: None,
    rotation_leaves: tuple[Leaf, Leaf],
    mtls_ca: CA,
    tmp_path: Path,
) -> None:
    with counted_logs() as logs:
        before = Usage.now()
        figures = soak(mode, tmp_path / "certs.d", rotation_leaves, mtls_ca, DURATION)
        figures.before, figures.after = before, Usage.now()
    figures.logs = dict(logs.counts)
    figures.warnings = dict(logs.warnings.most_common(4))
    summary = figures.summary()
    print(f"\nSOAK {json.dumps(summary, sort_keys=True)}")
    if RECORD:
        record_figures(summary)

    assert figures.rotations >= int(DURATION / ROTATE_EVERY) // 2, summary
    assert figures.sync.requests > THREADS, summary
    assert figures.tasks.requests > TASKS, summary
    # Both certificates were really used: the rotation took effect, many times.
    assert set(figures.subjects) == {leaf.subject for leaf in rotation_leaves}, summary
    if mode == "atomic":
        # A retired pool is closed only by its last user (test_retired_transport_... below).
        assert summary["failures"] == 0, summary
    assert summary["unrecovered"] == 0, summary
    assert summary["thread_delta"] == 0, summary
    assert summary["fd_delta"] <= FD_TOLERANCE, summary
    assert summary["tls_object_delta"] <= 0, summary
    assert summary["transport_delta"] <= 0, summary
    assert summary["rss_delta_mb"] < RSS_TOLERANCE_MB, summary


# --------------------------------------------------------------------------- hostile files

PIPE, HUGE = "zz-pipe.crt", "zz-huge.crt"  # sorted after ca.crt: the good files are read first
HOSTILE_THREADS, HOSTILE_TASKS = 4, 16


@dataclass
class Tally:
    """Requests by (host, phase they started in: when the transport looks at the folder)."""

    ok: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    lock: Any = field(default_factory=threading.Lock)

    def add(self, host: str, started: int, outcome: str) -> None:
        with self.lock:
            if outcome != "200":
                self.failures[f"{host}: {outcome}"] += 1
            else:
                self.ok[(host, started)] += 1


class BrokenFolderLog(logging.Handler):
    """``(file, problem)`` of each "is now broken; still using the last good load" warning."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.problems: Counter[tuple[str, str]] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "still using the last good load" in text:
            found = re.search(r"cannot read \S*/([^/\s]+): (.+?)\. ", text)
            self.problems[(found.group(1), found.group(2)) if found else ("?", text)] += 1


def test_hostile_files_appear_in_a_host_folder_while_clients_run(
    mtls_ca: CA, rotation_leaves: tuple[Leaf, Leaf], tmp_path: Path, warmed_up: None
) -> None:
    """Issue 15: a FIFO, then an oversized ``.crt`` too, appear in one host's folder while
    threads and tasks send requests to it and to another host; then both go away.

    The folder was loaded before, so the rule for a change that breaks it applies (README,
    "Changes on disk"): the host keeps its last good candidates and logs one warning per new
    problem; it is read again at most once per ``refresh`` while broken (the FIFO is never
    opened, the oversized file never read: ``test_hostile_files.py``). So every request to
    either host answers 200, with the certificate it had, in every phase, and nothing hangs;
    the other host's folder is read once.
    """
    from test_transport import count_folder_reads

    root = tmp_path / "certs.d"
    leaf = rotation_leaves[0]
    servers = {
        name: MTLSServer(client_ca=mtls_ca, reject="tls", max_workers=32, idle_timeout=30)
        for name in ("steady", "hostile")
    }
    broken = BrokenFolderLog()
    sync_tally, task_tally = Tally(), Tally()
    phase = [0]
    duration = DURATION / 2  # four phases
    with contextlib.ExitStack() as stack:
        logs = stack.enter_context(counted_logs())
        logging.getLogger("dockercerts").addHandler(broken)
        stack.callback(logging.getLogger("dockercerts").removeHandler, broken)
        monkeypatch = stack.enter_context(pytest.MonkeyPatch.context())
        before = Usage.now()
        for server in servers.values():
            server.start()
            stack.callback(server.stop)
            CertsD(root).host(server.host).ca(server.server_ca).pair("client", leaf)
        folders = {name: CertsD(root).host(server.host) for name, server in servers.items()}
        urls = [(name, server.url + "/v2/") for name, server in servers.items()]
        reads = count_folder_reads(monkeypatch)
        transport = dockercerts.Transport(root=root, refresh=REFRESH)
        client = stack.enter_context(httpx.Client(transport=transport, timeout=20))
        for _, url in urls:  # the first loads, before the clock
            assert client.get(url).status_code == 200

        hostile = folders["hostile"].path
        sparse = tmp_path / HUGE  # one byte over the cap, and no data: made aside, moved in
        with open(sparse, "wb") as handle:
            handle.truncate(scan.MAX_CA_FILE_SIZE + 1)

        def repair() -> None:
            # The FIFO first: meanwhile the folder fails as it did, with no new warning.
            os.unlink(hostile / PIPE)
            os.unlink(hostile / HUGE)

        def vandal() -> None:
            steps: list[Callable[[], None]] = [
                lambda: os.mkfifo(hostile / PIPE),
                lambda: os.rename(sparse, hostile / HUGE),
                repair,
            ]
            for step in steps:
                time.sleep(duration / 4)
                step()
                phase[0] += 1

        def turns(offset: int) -> Iterator[tuple[str, str, int]]:
            """``(host, url, phase)`` for each request of a worker, the hosts in turn."""
            for number in range(offset, offset + MAX_REQUESTS_PER_WORKER):
                if time.monotonic() >= deadline:
                    return
                host, url = urls[number % 2]
                yield host, url, phase[0]

        def sync_worker(offset: int) -> None:
            for host, url, started in turns(offset):
                try:
                    outcome = str(client.get(url).status_code)
                except Exception as exc:
                    outcome = describe(exc)
                sync_tally.add(host, started, outcome)

        async def task_worker(aclient: httpx.AsyncClient, offset: int) -> None:
            for host, url, started in turns(offset):
                try:
                    outcome = str((await aclient.get(url)).status_code)
                except Exception as exc:
                    outcome = describe(exc)
                task_tally.add(host, started, outcome)

        async def tasks() -> Optional[str]:
            atransport = dockercerts.AsyncTransport(root=root, refresh=REFRESH)
            async with httpx.AsyncClient(transport=atransport, timeout=20) as aclient:
                for _, url in urls:
                    assert (await aclient.get(url)).status_code == 200
                async with anyio.create_task_group() as group:
                    for number in range(HOSTILE_TASKS):
                        group.start_soon(task_worker, aclient, number)
                return atransport.winner(dict(urls)["hostile"])

        started_at = time.monotonic()
        deadline = started_at + duration
        threads = [threading.Thread(target=vandal, name="soak-vandal")]
        threads += [
            threading.Thread(target=sync_worker, args=(number,), name=f"soak-client-{number}")
            for number in range(HOSTILE_THREADS)
        ]
        for thread in threads:
            thread.start()
        async_winner = anyio.run(tasks)
        for thread in threads:
            thread.join(duration + 30)
        assert not any(thread.is_alive() for thread in threads)
        elapsed = time.monotonic() - started_at
        sync_winner = transport.winner(dict(urls)["hostile"])
        subjects = {name: {r.client_subject for r in s.requests} for name, s in servers.items()}
        reads_of = Counter(path.name for path in reads)
    # Everything the run started is stopped: servers, clients, threads.
    after = Usage.now()
    summary = {
        "seconds": round(elapsed, 1),
        "sync_ok": {f"{h}/{p}": n for (h, p), n in sorted(sync_tally.ok.items())},
        "async_ok": {f"{h}/{p}": n for (h, p), n in sorted(task_tally.ok.items())},
        "failures": dict(sync_tally.failures + task_tally.failures),
        "reads": dict(reads_of),
        "broken_warnings": {f"{f}: {why}": n for (f, why), n in broken.problems.items()},
        "warnings": dict(logs.warnings),
        "fd_delta": after.fds - before.fds,
        "thread_delta": len(after.threads - before.threads),
    }
    print(f"\nSOAK-HOSTILE {json.dumps(summary, sort_keys=True)}")

    assert phase[0] == 3, summary
    assert not summary["failures"], summary
    # Both hosts answered, to threads and to tasks, in every phase: nothing hung.
    for tally in (sync_tally, task_tally):
        assert all(tally.ok[(host, p)] > 0 for host in servers for p in range(4)), summary
    # The hostile host kept its candidate (and the server saw no other certificate).
    assert sync_winner == async_winner == "client", summary
    assert subjects == {"steady": {leaf.subject}, "hostile": {leaf.subject}}, summary
    # One warning per transport for each problem, naming the file. A load that listed the
    # folder just before a file was removed finds it gone ("file vanished"), as Docker's would:
    # one more warning, and the next refresh loads the repaired folder.
    fifo = (PIPE, "is a named pipe (FIFO), not a regular file")
    large = (HUGE, "is more than 8 MiB, the most dockercerts reads from a .crt file")
    assert (broken.problems[fifo], broken.problems[large]) == (2, 2), summary
    vanished = {key: n for key, n in broken.problems.items() if key not in (fifo, large)}
    assert all(f in (PIPE, HUGE) and why == "file vanished" for f, why in vanished), summary
    assert sum(logs.warnings.values()) == 4 + sum(vanished.values()), summary
    # The steady folder was read once per transport; the hostile one at most once per
    # refresh and transport, besides the first loads.
    steady, hostile = servers["steady"].host, servers["hostile"].host
    assert reads_of[steady] == 2, summary
    assert 2 + 2 * 2 <= reads_of[hostile] <= 2 + 2 * (elapsed / REFRESH + 1), summary
    assert summary["thread_delta"] == 0, summary
    assert summary["fd_delta"] <= FD_TOLERANCE, summary


# --------------------------------------------------------------------------- the race


def test_retired_transport_is_not_closed_under_a_request(
    rotation_leaves: tuple[Leaf, Leaf],
    certs_d: CertsD,
    mtls_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The interleaving behind the rare failures of the soak's atomic run, made deterministic.

    1. the victim thread takes the host's steady lane (pair A's slot) and is held just after;
    2. the pair changes on disk; the closer thread's request reloads, retires A's pool, finds
       it idle and is held between that check and ``close()``;
    3. the victim sends its request on A's idle connection and starts reading the answer;
    4. the closer closes A's pool: the victim's socket is closed under it.
    """
    from dockercerts import _hosts as hosts_module
    from dockercerts import transport as transport_module

    first, second = rotation_leaves
    server = mtls_server(reject="tls")
    host = certs_d.host(server.host).ca(server.server_ca).pair("client", first)
    url = server.url + "/v2/"
    holding, go, active = threading.Event(), threading.Event(), threading.Event()
    original_steady, original_drain = transport_module.steady, hosts_module.HostState.drain

    def steady(*args: Any) -> Any:
        lane = original_steady(*args)
        if threading.current_thread().name == "victim":
            holding.set()
            go.wait(5)
        return lane

    def drain(self: Any) -> Any:
        found = original_drain(self)
        if found and threading.current_thread().name == "closer":
            go.set()
            active.wait(5)
        return found

    def trace(event: str, info: Any) -> None:
        if event == "http11.receive_response_headers.started":
            active.set()
            time.sleep(0.3)  # reading the answer while the closer closes the pool

    outcome: dict[str, Any] = {}

    def request(name: str, **options: Any) -> None:
        try:
            outcome[name] = client.get(url, **options).status_code
        except Exception as exc:
            outcome[name] = describe(exc)

    client = httpx.Client(transport=dockercerts.Transport(root=certs_d.root, refresh=0), timeout=3)
    with client:
        assert client.get(url).status_code == 200  # pair A's pool, with an idle connection
        monkeypatch.setattr(transport_module, "steady", steady)
        monkeypatch.setattr(hosts_module.HostState, "drain", drain)
        victim = threading.Thread(
            target=request, args=("victim",), kwargs={"extensions": {"trace": trace}}, name="victim"
        )
        victim.start()
        assert holding.wait(5)
        host.pair("client", second)  # the next refresh retires pair A's pool
        closer = threading.Thread(target=request, args=("closer",), name="closer")
        closer.start()
        closer.join(10)
        victim.join(10)
        assert not victim.is_alive()
        assert not closer.is_alive()
    assert outcome["closer"] == 200
    assert outcome["victim"] == 200, outcome


# --------------------------------------------------------------------------- the figures


FIGURES_HEADER = """\
# Soak figures

Generated by `nox -s soak` (`tests/test_soak.py`, `DOCKERCERTS_SOAK_FIGURES`): do not edit.
What the columns mean, and the runs before this file existed: docs/reliability.md.

| profile | mode | seconds | rotations | requests | requests/s | failures | recovered | \
unrecovered | TLS handshakes | fd Δ | thread Δ | TLS objects Δ | RSS Δ | run |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
<!-- figures:end -->
"""


def record_figures(summary: dict[str, Any]) -> None:
    """Replace this mode's row in the generated figures file (created when missing)."""
    profile = "long" if SOAK else "default"
    marker = f"{profile}:{summary['mode']}"
    row = (
        f"| {profile} | {summary['mode']} | {summary['seconds']} | {summary['rotations']} | "
        f"{summary['requests']} | {summary['req_per_s']} ({summary['sync_req_per_s']} sync + "
        f"{summary['async_req_per_s']} async) | {summary['failures']} | "
        f"{summary['recovered']} | {summary['unrecovered']} | {summary['handshakes']} | "
        f"{summary['fd_delta']:+d} | {summary['thread_delta']:+d} | "
        f"{summary['tls_object_delta']:+d} | {summary['rss_delta_mb']:+.1f} MB | "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs <!-- {marker} --> |"
    )
    figures = Path(FIGURES_FILE)
    with contextlib.suppress(FileExistsError), open(figures, "x", encoding="utf-8") as new:
        new.write(FIGURES_HEADER)
    with locked(figures) as text:
        pattern = re.compile(rf"^.*<!-- {re.escape(marker)} -->.*$", re.M)
        if pattern.search(text[0]):
            text[0] = pattern.sub(lambda _: row, text[0])
        else:
            text[0] = text[0].replace("<!-- figures:end -->", row + "\n<!-- figures:end -->")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[list[str]]:
    import fcntl

    with open(path, "r+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            text = [handle.read()]
            yield text
            handle.seek(0)
            handle.write(text[0])
            handle.truncate()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
