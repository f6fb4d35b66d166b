"""Live rollout: a running server follows the registry's channels (``finance@prod``) without a restart.

Each request for ``name@channel`` (or a bare ``name`` when the server has a default channel and ``name``
has that channel) is routed, before residency, to the exact version the channel holds now —
``finance@4`` — so the row pins that version for its whole life. A background thread re-reads every
followed channel each ``poll_s`` seconds: after a promotion or rollback new requests get the new version
at once, rows in flight finish on the version they pinned, and a version no channel holds any more is
unloaded as soon as its last row ends (it is never unloaded while pinned: residency refuses).

A canary sends an exact share of a channel's requests to the candidate (the k-th request goes to the
canary when ``floor(k * p / 100)`` steps up: 10% is exactly 100 of every 1,000, on each replica). Per role
(``holder`` / ``canary``) the server counts requests, errors, latency and, for classifiers, labels on
``/metrics`` — labels are the adapter's name, the channel and the role, so their sets stay fixed — and
writes the canary's figures beside the history, where ``promote --finish`` and ``rollback`` record them.

>>> rollout.route("finance@prod")  # doctest: +SKIP
'finance@4'
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import AdapterHubError, AdapterInUseError
from ..registry.channels import ChannelState, write_stats

log = logging.getLogger("adapterhub.serve")
MAX_FOLLOWED = 256  # channels one server follows (their names are metric labels)
MAX_LABELS = 32  # distinct class labels counted per channel role; more count as "other"
_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class _Followed:
    state: ChannelState
    served: int = 0  # requests routed since this state began (drives the canary split)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)  # ref -> requests, errors, seconds, labels
    dirty: bool = False

    def role_of(self, ref: str) -> str | None:
        for role, held in self.state.refs().items():
            if held == ref:
                return role
        return None


class Rollout:
    """The channels one server follows, re-read every ``poll_s`` seconds.

    Args:
        hub: the server's :class:`~adapterhub.AdapterHub` (its registry holds the channels).
        metrics: the server's :class:`~adapterhub.serve.metrics.Metrics` (the rollout adds its series).
        unload: frees a resident version (the engine's, so residency metrics stay right).
        default_channel: a bare ``name`` request means ``name@<default_channel>`` when that channel exists.
        poll_s: how often the channels are read again.
    """

    def __init__(self, hub: Any, metrics: Any, *, unload: Callable[[str], bool], default_channel: str | None = None,
                 poll_s: float = 1.0) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.hub, self.unload, self.default_channel, self.poll_s = hub, unload, default_channel, poll_s
        self._followed: dict[tuple[str, str], _Followed] = {}
        self._retired: dict[str, int] = {}  # ref -> polls it has been seen unloaded
        self._missing: dict[tuple[str, str], float] = {}  # no such channel, as of this monotonic time
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        r, roles = metrics.registry, ["adapter", "channel", "role"]
        self.version = Gauge("adapterhub_channel_version", "Version a channel role serves (0: none)", roles, registry=r)
        self.routed = Counter("adapterhub_channel_routed", "Requests routed through a channel, by role", roles,
                              registry=r)
        self.outcomes = Counter("adapterhub_channel_requests", "Finished requests of a channel role's version",
                                [*roles, "outcome"], registry=r)
        self.seconds = Histogram("adapterhub_channel_request_seconds", "Latency of a channel role's version", roles,
                                 buckets=_LATENCY, registry=r)
        self.labels = Counter("adapterhub_channel_labels", "Class labels a channel role's version answered",
                              [*roles, "label"], registry=r)
        metrics.on_request.append(self.observe)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="adapterhub-rollout", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a registry hiccup must not stop following; next poll retries
                log.exception("reading the channels failed; retrying in %.1f s", self.poll_s)

    # --- routing ---------------------------------------------------------------------------------
    def route(self, ref: str | None) -> str | None:
        """The exact ``name@version`` a request for ``ref`` runs on now (``ref`` itself when it is no channel)."""
        key = self._channel_key(ref)
        if key is None:
            return ref
        with self._lock:
            followed = self._followed.get(key)
        if followed is None:
            followed = self._follow(key)
            if followed is None:
                return ref
        with self._lock:
            state = followed.state
            followed.served += 1
            role = "holder"
            if state.canary is not None and state.canary_percent:
                share = state.canary_percent / 100
                if math.floor(followed.served * share) > math.floor((followed.served - 1) * share):
                    role = "canary"
            routed = state.refs()[role]
        self.routed.labels(adapter=key[0], channel=key[1], role=role).inc()
        return routed

    def follows(self, ref: str | None) -> bool:
        """Whether ``ref`` is served through a channel here (then each request picks its version at arrival)."""
        key = self._channel_key(ref)
        if key is None:
            return False
        with self._lock:
            if key in self._followed:
                return True
        return self._follow(key) is not None

    def observe(self, endpoint: str, adapter: str, status: int, seconds: float) -> None:
        """Count one finished request of ``adapter`` (an exact version) for each channel role serving it."""
        for key, followed, role in self._roles_of(adapter):
            outcome = "ok" if status < 400 else "error"
            self.outcomes.labels(adapter=key[0], channel=key[1], role=role, outcome=outcome).inc()
            self.seconds.labels(adapter=key[0], channel=key[1], role=role).observe(seconds)
            with self._lock:
                into = followed.figures.setdefault(adapter, {"requests": 0, "errors": 0, "seconds": 0.0, "labels": {}})
                into["requests"] += 1
                into["errors"] += outcome == "error"
                into["seconds"] += seconds
                followed.dirty = True

    def observe_labels(self, ref: str | None, answered: list[str]) -> None:
        """Count the class labels ``ref`` (an exact version) answered, for each channel role serving it."""
        for key, followed, role in self._roles_of(ref or ""):
            with self._lock:
                counts = followed.figures.setdefault(ref, {"requests": 0, "errors": 0, "seconds": 0.0, "labels": {}})
                for label in answered:
                    label = label if label in counts["labels"] or len(counts["labels"]) < MAX_LABELS else "other"
                    counts["labels"][label] = counts["labels"].get(label, 0) + 1
                    self.labels.labels(adapter=key[0], channel=key[1], role=role, label=label).inc()
                followed.dirty = True

    def refresh(self) -> None:
        """Read every followed channel again; retire versions no channel holds; unload retired ones no row pins."""
        with self._lock:
            keys = list(self._followed)
        for key in keys:
            state = self._read(key)
            if state is None:
                continue
            with self._lock:
                followed = self._followed[key]
                if state != followed.state:
                    log.info("channel %s@%s: %s -> %s", key[0], key[1], followed.state.refs(), state.refs())
                    self._retired.update({ref: 0 for ref in followed.state.refs().values()})
                    self._followed[key] = followed = _Followed(state)
                    self._set_versions(key, state)
                if followed.dirty and state.canary is not None:
                    followed.dirty = False
                    self._write_figures(key, followed)
        self._release_retired()

    # --- internals ------------------------------------------------------------------------------
    def _channel_key(self, ref: str | None) -> tuple[str, str] | None:
        if ref is None or ref.startswith("hf://") or any(mark in ref for mark in ":+/"):
            return None  # the base, a Hub reference, a mix or a path
        name, at, selector = ref.partition("@")
        if not at:
            return (name, self.default_channel) if self.default_channel else None
        if selector.isdigit() or selector == "latest":
            return None
        return name, selector

    def _follow(self, key: tuple[str, str]) -> _Followed | None:
        with self._lock:
            checked = self._missing.get(key)
        if checked is not None and time.monotonic() - checked < self.poll_s:
            return None  # asked a moment ago: no registry read per request for a name that is no channel
        state = self._read(key)
        if state is None or state.holder is None:
            with self._lock:
                if len(self._missing) >= MAX_FOLLOWED:
                    self._missing.clear()
                self._missing[key] = time.monotonic()
            return None  # no such channel (or tag): the request goes on as it was written
        with self._lock:
            if key not in self._followed and len(self._followed) < MAX_FOLLOWED:
                self._followed[key] = _Followed(state)
                self._set_versions(key, state)
            return self._followed.get(key)

    def _read(self, key: tuple[str, str]) -> ChannelState | None:
        try:
            return self.hub.registry.channel(*key)
        except AdapterHubError:
            return None

    def _roles_of(self, ref: str) -> list[tuple[tuple[str, str], _Followed, str]]:
        with self._lock:
            found = [(key, followed, followed.role_of(ref)) for key, followed in self._followed.items()]
        return [(key, followed, role) for key, followed, role in found if role is not None]

    def _set_versions(self, key: tuple[str, str], state: ChannelState) -> None:
        for role, version in (("holder", state.holder), ("canary", state.canary)):
            self.version.labels(adapter=key[0], channel=key[1], role=role).set(version or 0)

    def _write_figures(self, key: tuple[str, str], followed: _Followed) -> None:
        try:
            write_stats(self.hub.registry.root, key[0], key[1], {ref: dict(one, labels=dict(one["labels"]))
                                                                  for ref, one in followed.figures.items()})
        except OSError as error:
            log.warning("could not write the canary figures of %s@%s: %s", *key, error)

    def _release_retired(self) -> None:
        with self._lock:
            held = {ref for followed in self._followed.values() for ref in followed.state.refs().values()}
            retired = [ref for ref in self._retired if ref not in held]
            for ref in set(self._retired) & held:
                del self._retired[ref]
        for ref in retired:
            entry = self.hub.residency.get(ref)
            if entry is None:
                self._retired[ref] += 1
                if self._retired[ref] > 5:  # gone for good (a request routed just before the move may reload it)
                    del self._retired[ref]
                continue
            if entry.pins:
                continue  # rows still run on it: released once the last one ends
            try:
                if self.unload(ref):
                    log.info("released %s: no channel holds it and its last row ended", ref)
            except AdapterInUseError:
                pass  # a row pinned it meanwhile: next poll
