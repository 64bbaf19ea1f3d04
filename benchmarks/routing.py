"""The routing's own cost per request on a sticky endpoint (issue 14), self-contained.

``python benchmarks/routing.py`` prints the figure; :func:`measure` returns it for a runner.
Two ``runtime="containerd"`` transports over an in-memory inner transport, the same blob
request, steady (every endpoint's winner known): ``routed`` has a ``hosts.toml`` with a
pull mirror in front of the server (each request is mapped to its operation and rewritten
for the mirror: URL, ``Host``, ``?ns=``); ``plain`` has the same pair in a folder without
``hosts.toml`` (nothing routed). The cost is the median of the per-round differences,
rounds interleaved (A, B, B, A, ...) because absolute times drift on shared machines.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import httpx

import dockercerts
from dockercerts.testing import CA

_OK = httpx.Response(200, content=b"{}")
_BODY = httpx.ByteStream(b"{}")


def _ok(request: httpx.Request) -> httpx.Response:
    # One prebuilt response, reset as new: building one would only add noise.
    _OK.stream, _OK.is_closed, _OK.is_stream_consumed = _BODY, False, False
    return _OK


class _Mocked(dockercerts.Transport):
    def _make(self, candidate: dockercerts.Candidate, proxy: Optional[httpx.Proxy] = None) -> Any:
        return httpx.MockTransport(_ok)


def measure(calls: int = 2000, rounds: int = 41) -> dict[str, float]:
    """``routed_us`` and ``plain_us`` per request, and ``cost_us``: routing's own cost."""
    with tempfile.TemporaryDirectory(prefix="dockercerts-bench-routing-") as tmp:
        routed_root, plain_root = Path(tmp) / "routed", Path(tmp) / "plain"
        # A client pair at each endpoint: the winner is known, the steady path is taken.
        leaf = CA(name="bench routing CA").issue_client("bench")
        for folder in (routed_root / "reg.bench.test:5000", plain_root / "reg.bench.test:5000"):
            leaf.write(folder / "client.cert", folder / "client.key")
        (routed_root / "reg.bench.test:5000" / "hosts.toml").write_text(
            'server = "https://reg.bench.test:5000"\nclient = [["client.cert", "client.key"]]\n'
            '[host."https://mirror.bench.test:5001"]\ncapabilities = ["pull"]\n'
            'client = [["client.cert", "client.key"]]\n'
        )
        request = httpx.Request(
            "GET", "https://reg.bench.test:5000/v2/team/app/blobs/sha256:" + "a" * 64
        )
        routed = _Mocked(runtime="containerd", root=routed_root, refresh=3600)
        plain = _Mocked(runtime="containerd", root=plain_root, refresh=3600)
        for transport in (routed, plain):  # loads the folder, settles the winners
            transport.handle_request(request).close()
        attempts = routed.handle_request(request).extensions["dockercerts.attempts"]
        assert [a.endpoint for a in attempts] == ["https://mirror.bench.test:5001/v2"]

        def per_call(handle: Callable[[httpx.Request], Any]) -> float:
            gc.disable()
            try:
                start = time.process_time()
                for _ in range(calls):
                    handle(request).close()
                return (time.process_time() - start) / calls
            finally:
                gc.enable()

        a: list[float] = []
        b: list[float] = []
        for number in range(rounds):
            first, second = (routed, plain) if number % 2 == 0 else (plain, routed)
            x, y = per_call(first.handle_request), per_call(second.handle_request)
            a.append(x if first is routed else y)
            b.append(y if first is routed else x)
        routed.close()
        plain.close()
    return {
        "routed_us": statistics.median(a) * 1e6,
        "plain_us": statistics.median(b) * 1e6,
        "cost_us": statistics.median((x - y) * 1e6 for x, y in zip(a, b)),
    }


if __name__ == "__main__":
    result = measure()
    print(
        f"routing's own cost on a sticky endpoint: {result['cost_us']:.2f} µs a request "
        f"(routed {result['routed_us']:.2f} µs, not routed {result['plain_us']:.2f} µs; "
        "target <= 3 µs)"
    )
