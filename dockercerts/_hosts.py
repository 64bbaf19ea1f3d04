"""What a transport remembers about each registry host, shared by every front end.

For each ``host[:port]``: the folder Docker would read (:func:`docker_host_names`), its
candidates, each behind a :class:`Slot` (the candidate's own inner transport, built on first
use), the winner, the candidates recently rejected at the certificate layer, and the turn
that lets one request at a time look for a winner. No sockets and no awaits: a front end
makes inner transports through the ``make`` it hands in, and closes what :meth:`drain` returns.
:mod:`dockercerts.flow` reads and updates this state; it never decides anything here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Generic, Optional, TypeVar, Union

import httpx

from ._layouts import docker_host_names
from ._options import Options
from ._slots import Slot
from .containerd import RequestView
from .diagnose import NOT_LOGGED
from .errors import CertsDirError
from .gochoice import issuer_listed
from .loader import Candidate, HostCerts, unwrap, with_system
from .locate import StrPath, certs_root, host_dir, resolve_platform
from .routing import NEEDS, Target, target

__all__ = ["docker_host_names", "host_dir_for_url"]

log = logging.getLogger("dockercerts")

Inner = TypeVar("Inner")
T = TypeVar("T")


def host_dir_for_url(
    url: Union[str, httpx.URL],
    *,
    root: Optional[StrPath] = None,
    platform: Optional[str] = None,
) -> Path:
    """The host directory the transport reads for ``url``: the first of
    :func:`docker_host_names` that exists under ``root``, else the first one.

        >>> host_dir_for_url("https://reg:5000/v2/", root="/etc/docker/certs.d").name
        'reg:5000'
    """
    plat = resolve_platform(platform)
    base = certs_root(platform=plat) if root is None else Path(root)
    return _first_dir(_host_dirs(docker_host_names(httpx.URL(url)), base, plat))


def _host_dirs(names: tuple[str, ...], root: Path, platform: str) -> tuple[Path, ...]:
    return tuple(host_dir(name, root=root, platform=platform) for name in names)


def _first_dir(dirs: tuple[Path, ...]) -> Path:
    """The first of ``dirs`` that is a folder, else the first one."""
    if len(dirs) == 1:
        return dirs[0]
    return next((d for d in dirs if os.path.isdir(d)), dirs[0])


def _copy(error: CertsDirError) -> CertsDirError:
    """A new exception like ``error`` (type, message, attributes) without its traceback: a
    kept error is raised to many requests, possibly at once, and each gets its own."""
    copy = type(error).__new__(type(error), *error.args)
    copy.__dict__.update(error.__dict__)
    return copy


def _identity(
    trust: tuple[object, ...], certs: HostCerts, candidate: Candidate
) -> tuple[object, ...]:
    """What a candidate's context depends on: equal identities may share a pool.

    ``trust`` is the part all of a folder's candidates share (see :func:`_trust_identity`).
    """
    pair = candidate.pair
    if pair is None:
        return trust
    files = tuple(e for e in certs.snapshot.entries if e[0] in (pair.cert.name, pair.key.name))
    return (*trust, pair.name, pair.fingerprint, files)


def _trust_identity(certs: HostCerts) -> tuple[object, ...]:
    anchors = hashlib.sha256(b"".join(certs.ca_certificates)).hexdigest()
    return (certs.trust, certs.uses_system_roots, anchors, certs.skip_verify, certs.system)


def listed_first(
    items: tuple[T, ...],
    chain_issuers: Callable[[T], Sequence[bytes]],
    ca_names: tuple[bytes, ...],
) -> tuple[T, ...]:
    """``items`` with those whose chain a server's CA names list first, each group in
    Docker's order.

    The listed ones are the pairs Go would consider (:func:`~dockercerts.gochoice.issuer_listed`);
    the others follow, since a server may trust more CAs than it names. Without names (the
    server accepts any CA) the order is Docker's.

        >>> chains = {"a": [b"x"], "b": [b"root"], "c": [b"y"]}
        >>> listed_first(("a", "b", "c"), chains.__getitem__, (b"root",))
        ('b', 'a', 'c')
    """
    if not ca_names:
        return items
    names = frozenset(ca_names)
    listed = tuple(item for item in items if issuer_listed(chain_issuers(item), names))
    if not listed or len(listed) == len(items):
        return items
    return (*listed, *(item for item in items if item not in listed))


def _chain_issuers(slot: Slot[Any]) -> Sequence[bytes]:
    pair = slot.candidate.pair
    return () if pair is None else pair.chain_issuers


class Routes(Generic[Inner]):
    """A registry's endpoints for each operation (containerd's ``hosts.toml``), each with its
    own :class:`HostState`, and the endpoint that answered last per operation.

    ``by_op`` is replaced at each reload, never mutated. ``sticky`` maps an operation to
    ``(endpoint name, until)``: the endpoints before it failed, so the walk starts there
    until ``until`` (:func:`~dockercerts.routing.walk_order`); the flow decides what goes in.
    """

    __slots__ = ("by_op", "recheck", "sticky")

    def __init__(
        self, by_op: dict[str, tuple[tuple[Target, HostState[Inner]], ...]], recheck: float
    ) -> None:
        self.by_op = by_op
        self.recheck = recheck
        self.sticky: dict[str, tuple[str, float]] = {}

    def start(self, op: str, now: float) -> Optional[str]:
        """The endpoint the walk for ``op`` starts from, while remembered."""
        held = self.sticky.get(op)
        return held[0] if held is not None and held[1] > now else None

    def stick(self, op: str, name: Optional[str], now: float) -> None:
        """Start later walks for ``op`` at ``name`` for ``recheck`` seconds (``None``: at the
        first endpoint, the default). Kept as is while it holds: the endpoints before it
        are tried again ``recheck`` seconds after they failed, not after the last success."""
        if name is None or self.recheck <= 0:
            self.sticky.pop(op, None)
        elif self.start(op, now) != name:
            self.sticky[op] = (name, now + self.recheck)


#: The steady lane (:func:`dockercerts.flow.steady`): the winner's slot, the endpoint it
#: belongs to (containerd routing; ``None``: the request's own host) and that endpoint's host
#: state.
Lane = tuple[Slot[Any], Optional[Target], "HostState[Any]"]


class HostState(Generic[Inner]):
    """One registry host: its candidates' slots, the winner, what was rejected. One lock.

    Requests read ``ranked`` without the lock: it is replaced, never mutated. The lock
    guards reloads and bookkeeping and is never held while waiting on the network.
    """

    def __init__(
        self,
        names: tuple[str, ...],
        options: Options,
        make: Callable[[Candidate], Inner],
        *,
        make_for: Optional[Callable[[httpx.URL], Callable[[Candidate], Inner]]] = None,
        owner: Optional[HostState[Inner]] = None,
    ) -> None:
        self.names = names
        self._options = options
        # An endpoint of ``owner``'s folder (containerd routing): its certificates come from
        # that folder, installed by the owner at each of its reloads; it reads nothing itself.
        self._owner = owner
        # Named once (a hostile name raises here, before any file is touched); which of them
        # exists is looked up at every check, since folders come and go.
        self._dirs = options.layout.paths(names) if owner is None else ()
        self._make: Callable[[Candidate], Inner] = make
        self._make_for = make_for
        self._lock = threading.Lock()
        #: Until when requests use this state without a look at the directory: ``-inf`` while
        #: the folder cannot be loaded or the state is evicted, so that one comparison on
        #: every request covers all three (:meth:`Hosts.current`).
        self.due = float("-inf")
        self._broken_since: Optional[str] = None
        # Why the folder could not be loaded, if it never was: raised again (a copy) until
        # ``_retry``, instead of reading the folder for every request.
        self._failure: Optional[CertsDirError] = None
        self._retry = float("-inf")
        self._look_claimed = False  # a request took the look that is due (claim_look)
        self._said: set[tuple[str, str]] = set()
        self.certs: Optional[HostCerts] = None
        self.slots: tuple[Slot[Inner], ...] = ()
        # The winner first, then Docker's order (with order="ca-names", the pairs the
        # server's CA names list before the others).
        self.ranked: tuple[Slot[Inner], ...] = ()
        self.winner: Optional[str] = None
        #: The steady lane, ``(winner's slot, None, self)``, when :meth:`order` would certainly
        #: put the winner first (a winner is known and no rejection is remembered; else
        #: ``None``, and :meth:`order` decides). Nobody searches while a winner is known, so
        #: no turn is taken either: settling the lane's slot changes nothing while it is the
        #: lane. Kept up to date by :meth:`_relane` whenever one of those changes, so requests
        #: read it without a call or a new tuple.
        self.lane: Optional[Lane] = None
        # The DER names of the server's CertificateRequest, once learned (order="ca-names").
        self.ca_names: Optional[tuple[bytes, ...]] = None
        #: Whether the next search should learn them first (see :meth:`learned`).
        self.learn_pending = False
        # Slot key -> until when it is skipped: a rejection at the certificate layer.
        self._rejected: dict[tuple[object, ...], float] = {}
        self._turn: Optional[threading.Event] = None
        #: Retired transports nobody uses any more, for the next request to close in its
        #: own (sync or async) way: ``if state.closable: for done in state.drain(): ...``.
        self.closable: list[Inner] = []
        self.evicted = False
        self.used = 0.0
        #: containerd's endpoints when the folder routes requests elsewhere (mirrors, a
        #: ``server`` that is not this host, ``override_path``, headers); ``None``: sent here.
        self.routes: Optional[Routes[Inner]] = None
        self._endpoints: dict[str, HostState[Inner]] = {}

    @property
    def directory(self) -> Path:
        """The folder in use (or, before any load, the one Docker would name first)."""
        return self.certs.directory if self.certs is not None else self._dirs[0]

    def _directory(self) -> Path:
        return self._options.layout.pick(self.names, self._dirs)

    def claim_look(self, now: float) -> None:
        """The caller will look at the folder (:meth:`refresh`), which is due: until it is done,
        and for at most ``refresh`` seconds, other requests keep using the last good load
        instead of each waiting for the lock (or, async, for a worker thread of its own).
        A folder never loaded, failing or evicted is not claimed: each request looks."""
        if self.due != float("-inf"):
            self.due = now + self._options.refresh
            self._look_claimed = True

    def refresh(self, now: float) -> None:
        """Reload when a look was claimed or ``due`` has come, and the directory changed on
        disk.

        A folder that was never loaded raises the error of its last read for ``refresh`` seconds.
        """
        with self._lock:
            failure = self._failure if now < self._retry else None
            # Neither claimed nor due: another thread looked meanwhile.
            if failure is None and (self._look_claimed or now >= self.due):
                self._look_claimed = False
                self._look(now)
        if failure is not None:
            raise _copy(failure)

    def _look(self, now: float) -> None:
        directory = self._directory()
        current = self.certs
        if (
            current is not None
            and current.directory == directory
            and self._options.layout.unchanged(directory, current)
        ):
            self._broken_since = None
        else:
            try:
                self._reload(directory, current)
            except CertsDirError as exc:  # only when there is no last good load to keep
                self._failure = _copy(exc)  # without the traceback, which holds this request
                self._retry, self.due = now + self._options.refresh, float("-inf")
                raise
            self._failure, self._retry = None, float("-inf")
        if not self.evicted:
            self.due = now + self._options.refresh

    def _reload(self, directory: Path, current: Optional[HostCerts]) -> None:
        try:
            found = self._options.layout.view(
                directory, self.names, self._options.trust, self._options.password.get()
            )
            view = found if isinstance(found, RequestView) else None
            certs = unwrap(self._system(found.certs if isinstance(found, RequestView) else found))
            more = [unwrap(self._system(e.certs)) for e in view.endpoints] if view else []
        except CertsDirError as exc:
            if current is None:
                raise
            # A string, not the exception: a kept log record must not keep its traceback
            # alive, whose frames hold key bytes and the whole client.
            message = str(exc)
            if self._broken_since != message:
                self._broken_since = message
                log.warning(
                    "%s changed and is now broken; still using the last good load: %s",
                    directory,
                    message,
                )
            return
        self._broken_since = None
        for warning in certs.warnings:
            # Reloads (a Kubernetes rotation, say) must not repeat the same warning.
            if warning.code in NOT_LOGGED:
                continue
            if (warning.code, str(warning.path)) not in self._said:
                self._said.add((warning.code, str(warning.path)))
                log.warning("%s: %s", directory, warning)
        self._install(certs)
        self._route(view, more)

    def _system(self, found: Union[HostCerts, BaseException]) -> Union[HostCerts, BaseException]:
        return with_system(found, self._options.system, self._options.trust)

    def _route(self, view: Optional[RequestView], certs: list[HostCerts]) -> None:
        """Install containerd's endpoints (``view``, their TLS ``certs``): each endpoint other
        than this host gets a state of its own, kept across reloads while its URL stays."""
        request = self._options.layout.request_host(self.names)
        aims = (
            []
            if view is None
            else [target(e.endpoint, view.registry, request) for e in view.endpoints]
        )
        if view is None or (len(aims) == 1 and view.own == 0 and aims[0].identity):
            for gone in self._endpoints.values():
                gone._retire_from(self)
            self._endpoints, self.routes = {}, None
            return
        old = self._endpoints
        states: dict[str, HostState[Inner]] = {}
        pairs: list[tuple[Target, HostState[Inner]]] = []
        for index, (aim, endpoint_certs) in enumerate(zip(aims, certs)):
            if index == view.own:
                pairs.append((aim, self))
                continue
            state: Optional[HostState[Inner]] = old.pop(aim.name, None) or states.get(aim.name)
            if state is None:
                assert self._make_for is not None, "a routing host makes its endpoints' pools"
                state = HostState(
                    (aim.netloc,),
                    self._options,
                    self._make_for(httpx.URL(aim.name)),
                    owner=self,
                )
            with state._lock:
                state._install(endpoint_certs)
            states[aim.name] = state
            pairs.append((aim, state))
        for gone in old.values():
            gone._retire_from(self)
        self._endpoints = states
        by_op = {
            op: tuple(pair for pair in pairs if needs <= pair[0].capabilities)
            for op, needs in NEEDS.items()
        }
        routes: Routes[Inner] = Routes(by_op, self._options.recheck)
        if self.routes is not None:
            routes.sticky = self.routes.sticky
        self.routes = routes

    def _retire_from(self, owner: HostState[Inner]) -> None:
        """Retire an endpoint's slots (its owner holds its own lock): closable by the owner."""
        with self._lock:
            self.evicted, self.lane = True, None
            for slot in self.slots:
                inner = slot.retire()
                if inner is not None:
                    owner.closable.append(inner)
            self.slots = ()

    def _install(self, certs: HostCerts) -> None:
        """Swap in new candidates, keeping the slots of those whose files did not change."""
        if not self._options.client_certificates:
            certs = certs.trust_only()
        old = {slot.key: slot for slot in self.slots}
        before = {slot.name: slot.key for slot in self.slots}
        slots = []
        trust = _trust_identity(certs)  # hashed once for all the candidates
        for candidate in certs.candidates():
            key = _identity(trust, certs, candidate)
            slot = old.pop(key, None) or Slot(candidate, key, self._make)
            slots.append(slot)
        for slot in old.values():
            self._retire(slot)
        after = {slot.name: slot.key for slot in slots}
        if self.winner is not None and before.get(self.winner) != after.get(self.winner):
            log.info(
                "%s: %s changed; trying candidates in order again", certs.directory, self.winner
            )
            self.winner = None
        # A changed file is a new candidate: its old rejection says nothing about it.
        keys = set(after.values())
        self._rejected = {k: t for k, t in self._rejected.items() if k in keys}
        self.certs, self.slots = certs, tuple(slots)
        # Names are learned again after a change: whoever edits the folder may have changed
        # the server's CAs too, and it costs one handshake at the next search only.
        self.ca_names = None
        self.learn_pending = self._options.order == "ca-names" and len(slots) > 1
        self._rank()
        log.debug("%s: candidates %s", certs.directory, [s.name for s in slots])

    def _retire(self, slot: Slot[Inner]) -> None:
        inner = slot.retire()
        if inner is not None:
            # An endpoint's retired pools are closed by whoever drains its owner (the owner's
            # lock is held: endpoints are only reloaded from the owner's reload).
            (self._owner or self).closable.append(inner)

    def _rank(self) -> None:
        slots = listed_first(self.slots, _chain_issuers, self.ca_names or ())
        first = [slot for slot in slots if slot.name == self.winner]
        self.ranked = tuple(first + [slot for slot in slots if slot not in first])
        self._relane()

    def _relane(self) -> None:
        # The lane refers to this state: an evicted one keeps none, so that dropping it frees
        # it (and its candidates' contexts) at once rather than at the next full collection.
        first = self.ranked[0] if self.ranked and not self._rejected and not self.evicted else None
        self.lane = (first, None, self) if first is not None and first.name == self.winner else None

    # --- what the flow asks and tells ---------------------------------------------------------

    def is_winner(self, slot: Slot[Any]) -> bool:
        """Whether ``slot`` is the candidate this host last accepted (its files unchanged)."""
        return self.winner is not None and slot.name == self.winner and slot in self.slots

    def order(self, now: float) -> tuple[tuple[Slot[Inner], ...], tuple[Slot[Inner], ...]]:
        """The slots to try, and those skipped because they were rejected recently.

        When every candidate was rejected recently, all are tried again: skipping them all
        would only turn the server's answer into a guess.
        """
        ranked, rejected = self.ranked, self._rejected
        if not rejected:
            return ranked, ()
        skip = tuple(slot for slot in ranked if rejected.get(slot.key, now) > now)
        if not skip or len(skip) == len(ranked):
            return ranked, ()
        return tuple(slot for slot in ranked if slot not in skip), skip

    def learned(self, ca_names: tuple[bytes, ...]) -> None:
        """The server's CA names, read before a search (empty: none, or none could be read);
        the pairs they list are tried first from now on."""
        with self._lock:
            self.ca_names, self.learn_pending = ca_names, False
            self._rank()
        log.debug(
            "%s: %d CA names to go by; order: %s",
            self.names[0],
            len(ca_names),
            [slot.name for slot in self.ranked],
        )

    def settle(self, slot: Slot[Inner]) -> None:
        """Remember ``slot`` as the one to try first from now on; end the search for it."""
        name = slot.name
        rejected = self._rejected  # empty in the steady state: no key to hash
        if self.winner == name and self._turn is None and not (rejected and slot.key in rejected):
            return  # the steady state: nothing to change, no lock
        with self._lock:
            self._rejected.pop(slot.key, None)
            if self.winner != name and slot in self.slots:
                log.info("%s: using client certificate %s", self.names[0], name or "(none)")
                self.winner = name
                self._rank()
            self._relane()
            turn, self._turn = self._turn, None
        if turn is not None:
            turn.set()

    def remember(self, slot: Slot[Inner], now: float) -> None:
        """``slot`` was rejected at the certificate layer: skip it for ``recheck`` seconds."""
        if self._options.recheck > 0:
            with self._lock:
                self._rejected[slot.key] = now + self._options.recheck
                self._relane()

    def take_turn(self) -> tuple[Optional[threading.Event], Optional[threading.Event]]:
        """``(mine, theirs)``: start looking for a winner, or the turn of who already is.

        Both are ``None`` when a winner is known: nobody needs to search. ``mine`` must be
        handed back with :meth:`end_turn`, whatever happens.
        """
        if self.winner is not None:
            return None, None
        with self._lock:
            if self.winner is not None:
                return None, None
            if self._turn is not None:
                return None, self._turn
            self._turn = threading.Event()
            return self._turn, None

    def end_turn(self, turn: threading.Event) -> None:
        with self._lock:
            if self._turn is turn:
                self._turn = None
        turn.set()

    # --- closing ------------------------------------------------------------------------------

    def drain(self) -> list[Inner]:
        """Transports retired and unused, for the caller to close (in its own sync/async way)."""
        if not self.closable:
            return []
        with self._lock:
            done, self.closable = self.closable, []
        return done

    def retire_all(self) -> list[Inner]:
        """Retire every slot (eviction, close); returns what can be closed at once."""
        with self._lock:
            self.evicted, self.lane = True, None
            for slot in self.slots:
                self._retire(slot)
            for state in self._endpoints.values():
                state._retire_from(self)
            # ``ranked`` stays: a request that found this state just before has slots to use
            # (a retired slot closes what it builds when its last user leaves).
            self.slots = ()
            self.certs, self.due = None, float("-inf")
            done, self.closable = self.closable, []
        return done


class Hosts(Generic[Inner]):
    """Host states by ``(host, port)``; past ``max_hosts`` the least recently used is evicted.

    Lookups take no lock: a dict read is atomic, and only inserts (rare) need the lock.
    ``make_for(url)`` gives the function that builds a candidate's inner transport for that
    host (the host decides, for instance, whether a proxy is used).
    """

    def __init__(
        self,
        options: Options,
        make_for: Callable[[httpx.URL], Callable[[Candidate], Inner]],
        max_hosts: int,
    ) -> None:
        if not isinstance(max_hosts, int) or max_hosts < 1:
            raise ValueError(f"max_hosts must be an integer >= 1, not {max_hosts!r}")
        self._options = options
        self._make_for = make_for
        self._max = max_hosts
        self._states: dict[tuple[bytes, Optional[int]], HostState[Inner]] = {}
        self._lock = threading.Lock()

    def current(self, url: httpx.URL) -> Optional[HostState[Inner]]:
        """The host's state when using it needs no look at the disk now, else ``None``: then
        the caller looks, with :meth:`look` (an async front end, in a worker thread). A look
        that is due is claimed by that one caller (:meth:`HostState.claim_look`)."""
        state = self._states.get((url.raw_host, url.port))
        if state is None:
            return None
        now = time.monotonic()
        if now < state.due:  # due: -inf while failing or evicted
            state.used = now
            return state
        state.claim_look(now)
        return None

    def get(self, url: httpx.URL) -> HostState[Inner]:
        """The host's state, refreshed when due (file system calls: they may block)."""
        return self.current(url) or self.look(url)

    def look(self, url: httpx.URL) -> HostState[Inner]:
        """The host's state after the look at its folder that :meth:`current` left to the
        caller, or after its first load (file system calls: they may block)."""
        key = (url.raw_host, url.port)
        now = time.monotonic()
        while True:
            state = self._states.get(key)
            if state is None or state.evicted:
                state = self._insert(key, url, now)
            state.used = now
            state.refresh(now)
            # Evicted meanwhile by another thread: its slots are retired; look up again.
            if not state.evicted:
                return state

    def _insert(
        self, key: tuple[bytes, Optional[int]], url: httpx.URL, now: float
    ) -> HostState[Inner]:
        with self._lock:
            state = self._states.get(key)
            if state is not None and not state.evicted:
                return state
            # First: a name that is no registry host raises here and evicts nobody.
            state = HostState(
                self._options.layout.names(url),
                self._options,
                self._make_for(url),
                make_for=self._make_for,
            )
            if len(self._states) >= self._max:
                oldest = min(self._states, key=lambda k: self._states[k].used)
                # Closed by the request that made room: it drains this new state at once.
                state.closable.extend(self._states.pop(oldest).retire_all())
            state.used = now
            self._states[key] = state
            return state

    def retire_all(self) -> list[Inner]:
        with self._lock:
            states = list(self._states.values())
            self._states.clear()
        done: list[Inner] = []
        for state in states:
            done.extend(state.retire_all())
        return done

    def winner(self, url: httpx.URL) -> Optional[str]:
        state = self._states.get((url.raw_host, url.port))
        return None if state is None else state.winner
