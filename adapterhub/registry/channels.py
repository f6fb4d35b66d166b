"""Channels (``finance@prod``): tags that move only through a promotion, a canary or a rollback, each move an
append-only history row kept beside the manifests.

Layout under the registry root::

    channels/<name>.jsonl          # one JSON object per line, never rewritten: moves and their outcome marks
    channels/.<name>.<channel>.lock  # flock held for a whole promotion (evaluation included)
    channels/<name>.<channel>.stats/<pid>.json  # a running server's canary figures (read into history)

In the index a channel is the tag ``<channel>`` (the stable holder) and, while a canary runs,
``<channel>.canary`` (the candidate); the share of traffic the canary gets is in its history row.

A move is write-ahead: (1) a ``pending`` row is appended and fsynced, (2) the tags change in one index
transaction, (3) a ``committed`` mark is appended. A process killed anywhere leaves the old or the new
holder in the index; the next reader settles a pending row by looking at the index (it committed iff the
index holds its target), so the history always matches the index.

>>> registry.history("finance")[-1].describe()  # doctest: +SKIP
'#3 2026-12-07 08:01:12 promote prod: finance@3 -> finance@4 by alice (accuracy >= prod - 0.5: 91 >= 90.5)'
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError, PromotionRefusedError, RegistryError
from . import index
from .files import read_regular
from .refs import validate_name, validate_tag
from .staging import fsync_dir

CHANNELS_DIR = "channels"
CANARY_SUFFIX = ".canary"
MAX_HISTORY_BYTES = 64 << 20
OPS = ("promote", "canary", "finish", "rollback")


@dataclass(frozen=True)
class ChannelState:
    """Who holds a channel now: the stable version, and the canary (version and percent) if one runs."""

    name: str
    channel: str
    holder: int | None
    canary: int | None = None
    canary_percent: float | None = None

    def refs(self) -> dict[str, str]:
        out = {"holder": f"{self.name}@{self.holder}"} if self.holder is not None else {}
        if self.canary is not None:
            out["canary"] = f"{self.name}@{self.canary}"
        return out


@dataclass(frozen=True)
class HistoryRow:
    """One channel move as the history tells it (``state``: ``committed`` or ``aborted``)."""

    seq: int
    op: str
    channel: str
    name: str
    from_version: int | None
    to_version: int | None
    when: str
    who: str
    state: str
    canary: dict[str, Any] | None = None  # {"version", "percent"} the move leaves running (None: no canary)
    gate: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)  # {"candidate": {...}, "holder": {...}, "canary": {...}}
    data: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "op": self.op, "channel": self.channel, "name": self.name,
                "from": self.from_version, "to": self.to_version, "when": self.when, "who": self.who,
                "state": self.state, "canary": self.canary, "gate": self.gate, "checks": self.checks,
                "metrics": self.metrics, "data": self.data}

    def describe(self) -> str:
        def ref(version: int | None) -> str:
            return "-" if version is None else f"{self.name}@{version}"

        what = f"{ref(self.from_version)} -> {ref(self.to_version)}"
        if self.canary:
            what += f" (canary {ref(self.canary['version'])} at {self.canary['percent']:g}%)"
        gate = f" [{'; '.join(check['text'] for check in self.checks)}]" if self.checks else ""
        aborted = " ABORTED (the process stopped before the index changed)" if self.state == "aborted" else ""
        return f"#{self.seq} {self.when} {self.op} {self.channel}: {what} by {self.who}{gate}{aborted}"


def validate_channel(channel: Any) -> str:
    """A channel is a tag that does not end in ``.canary`` (reserved for the canary's own tag)."""
    validate_tag(channel)
    if channel.endswith(CANARY_SUFFIX):
        raise ConfigError(f"channel {channel!r}: names ending in {CANARY_SUFFIX!r} are reserved for canaries; "
                          "pick a word such as 'prod'")
    return channel


def default_who() -> str:
    """The OS user running this process (``"unknown"`` when there is none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Channels:
    """The channels of one registry: state, history, and moves under the index's write lock.

    Built by :class:`~adapterhub.registry.Registry` (use its ``promote``, ``rollback``, ``history``, ``channel``).
    """

    def __init__(self, root: Path, registry_index: Any) -> None:
        self.folder = root / CHANNELS_DIR
        self.index = registry_index

    # --- reading --------------------------------------------------------------------------
    def state(self, name: str, channel: str) -> ChannelState:
        """The channel's holder and canary now (settling a move a killed process left pending)."""
        validate_name(name)
        validate_channel(channel)
        with self.index.read() as db:
            return self._state(db, name, channel, self._rows(name, db))

    def history(self, name: str) -> list[HistoryRow]:
        """Every move of ``name``'s channels, oldest first, each with its settled state."""
        validate_name(name)
        with self.index.read() as db:
            return self._rows(name, db)

    def channels_of(self, name: str) -> list[str]:
        """Channels ``name`` has a history for."""
        return sorted({row.channel for row in self.history(name)})

    def holders(self) -> dict[tuple[str, str], ChannelState]:
        """``{(name, channel): state}`` from the history alone (what :meth:`restore` puts back)."""
        found = {}
        for path in sorted(self.folder.glob("*.jsonl")) if self.folder.is_dir() else []:
            rows = [row for row in self._settle(path.stem, _read_lines(path), None) if row.state == "committed"]
            for row in rows:
                canary = row.canary or {}
                found[(row.name, row.channel)] = ChannelState(row.name, row.channel, row.to_version,
                                                              canary.get("version"), canary.get("percent"))
        return found

    # --- writing --------------------------------------------------------------------------
    @contextmanager
    def locked(self, name: str, channel: str) -> Iterator[None]:
        """Hold the channel for one promotion or rollback; a second one is refused at once, with the reason."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f".{name}.{channel}.lock"
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip()[:200] or "another process"
                raise PromotionRefusedError(f"another promotion or rollback of {name}@{channel} is running "
                                            f"({holder}); nothing was changed — wait for it to finish, then "
                                            "look at `adapterhub registry history` and try again") from None
            try:
                handle.truncate(0)
                handle.write(f"pid {os.getpid()} of {default_who()} since {_now()}")
                handle.flush()
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def move(self, name: str, channel: str, *, op: str, expect: ChannelState, holder: int | None,
             canary: dict[str, Any] | None, who: str, gate: str | None = None,
             checks: list[dict[str, Any]] | None = None, metrics: dict[str, Any] | None = None,
             data: str | None = None, crash_at: str | None = None) -> HistoryRow:
        """Point the channel at ``holder`` (and the canary at ``canary``), if it still is as ``expect`` says.

        Write-ahead (see the module docstring). ``crash_at`` (``"pending"`` or ``"index"``) kills this process
        at that point: what the crash-safety test does to it.

        Raises:
            PromotionRefusedError: the channel moved since ``expect`` was read (another promotion won).
        """
        assert op in OPS
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.jsonl"
        with self.index.write() as db:
            rows = self._rows(name, db, settle_into=path)
            now = self._state(db, name, channel, rows)
            if (now.holder, now.canary) != (expect.holder, expect.canary):
                raise PromotionRefusedError(
                    f"{name}@{channel} moved while this {op} was prepared (it expected {_refs(expect)}, the index now "
                    f"holds {_refs(now)}); another promotion won and nothing was changed by this one — compare against "
                    "the new holder and try again")
            if index.resolve(db, name, holder) is None if holder is not None else False:
                raise PromotionRefusedError(f"{name}@{holder} is no longer registered; nothing was changed")
            seq = max((row.seq for row in rows), default=0) + 1
            row = HistoryRow(seq=seq, op=op, channel=channel, name=name, from_version=now.holder, to_version=holder,
                             when=_now(), who=who, state="pending", canary=canary, gate=gate, checks=checks or [],
                             metrics=metrics or {}, data=data)
            _append(path, row.to_dict())
            _maybe_crash(crash_at, "pending")
            if holder is not None:
                index.set_tag(db, name, channel, holder)
            if canary is not None:
                index.set_tag(db, name, channel + CANARY_SUFFIX, canary["version"])
            else:
                index.delete_tag(db, name, channel + CANARY_SUFFIX)
        _maybe_crash(crash_at, "index")
        _append(path, {"seq": seq, "state": "committed"})
        return _replace_state(row, "committed")

    def restore(self) -> dict[str, str]:
        """Point every channel tag at its holder by the history (after ``rebuild-index``); returns what was set."""
        restored = {}
        with self.index.write() as db:
            for (name, channel), state in self.holders().items():
                for tag, version in ((channel, state.holder), (channel + CANARY_SUFFIX, state.canary)):
                    if version is not None and index.resolve(db, name, version) is not None:
                        index.set_tag(db, name, tag, version)
                        restored[f"{name}@{tag}"] = f"{name}@{version}"
                    elif version is None:
                        index.delete_tag(db, name, tag)
        return restored

    def has_history(self, name: str, channel: str) -> bool:
        """Whether ``name@channel`` was ever moved by a promotion (then plain tagging may not move it)."""
        path = self.folder / f"{name}.jsonl"
        return path.is_file() and any(line.get("channel") == channel for line in _read_lines(path))

    # --- internals -------------------------------------------------------------------------
    def _rows(self, name: str, db: Any, *, settle_into: Path | None = None) -> list[HistoryRow]:
        path = self.folder / f"{name}.jsonl"
        if not path.is_file():
            return []
        return self._settle(name, _read_lines(path), db, settle_into=settle_into)

    def _settle(self, name: str, lines: list[dict[str, Any]], db: Any, *,
                settle_into: Path | None = None) -> list[HistoryRow]:
        """Rows with their outcome: a mark's, else (the last, pending one) what the index holds."""
        marks = {line["seq"]: line["state"] for line in lines if set(line) == {"seq", "state"}}
        rows = [_row(line) for line in lines if "op" in line]
        settled = []
        for row in rows:
            state = marks.get(row.seq)
            if state is None:
                if db is None:  # no index to ask (restore): a move without a mark did not commit
                    state = "aborted"
                else:
                    tags = {t: v for t, v in _tags(db, name).items()}
                    holds = tags.get(row.channel) == row.to_version and \
                        tags.get(row.channel + CANARY_SUFFIX) == (row.canary or {}).get("version")
                    state = "committed" if holds and row is rows[-1] else "aborted"
                if settle_into is not None:
                    _append(settle_into, {"seq": row.seq, "state": state})
            settled.append(_replace_state(row, state))
        return settled

    def _state(self, db: Any, name: str, channel: str, rows: list[HistoryRow]) -> ChannelState:
        tags = _tags(db, name)
        canary = tags.get(channel + CANARY_SUFFIX)
        percent = None
        if canary is not None:
            last = [row for row in rows if row.channel == channel and row.state == "committed"]
            percent = (last[-1].canary or {}).get("percent") if last else None
        return ChannelState(name, channel, tags.get(channel), canary, percent)


def _tags(db: Any, name: str) -> dict[str, int]:
    return {row["tag"]: row["version"] for row in db.execute("SELECT tag, version FROM tags WHERE name = ?", (name,))}


def _refs(state: ChannelState) -> str:
    refs = state.refs()
    return ", ".join(f"{role} {ref}" for role, ref in refs.items()) or "no holder"


def _row(line: dict[str, Any]) -> HistoryRow:
    return HistoryRow(seq=line["seq"], op=line["op"], channel=line["channel"], name=line["name"],
                      from_version=line.get("from"), to_version=line.get("to"), when=line.get("when", ""),
                      who=line.get("who", ""), state=line.get("state", "pending"), canary=line.get("canary"),
                      gate=line.get("gate"), checks=line.get("checks") or [], metrics=line.get("metrics") or {},
                      data=line.get("data"))


def _replace_state(row: HistoryRow, state: str) -> HistoryRow:
    return HistoryRow(**{**row.__dict__, "state": state})


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """The history file's complete lines (a torn last line, from a kill mid-write, is skipped)."""
    try:
        text = read_regular(path, limit=MAX_HISTORY_BYTES).decode("utf-8", "replace")
    except OSError as error:
        raise RegistryError(f"cannot read channel history {path}: {error}") from error
    lines = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("seq"), int):
            lines.append(value)
    return lines


def _append(path: Path, line: dict[str, Any]) -> None:
    new = not path.exists()
    data = (json.dumps(line, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a torn line from a killed writer stays on its own line
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        fsync_dir(path.parent)


def _maybe_crash(crash_at: str | None, point: str) -> None:
    if crash_at == point:
        os.kill(os.getpid(), 9)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


# --- a running server's canary figures ---------------------------------------------------------------------
def stats_folder(root: Path, name: str, channel: str) -> Path:
    """Where servers write ``name@channel``'s per-version figures while a canary runs (one file per process)."""
    return root / CHANNELS_DIR / f"{name}.{channel}.stats"


def write_stats(root: Path, name: str, channel: str, figures: dict[str, Any]) -> None:
    """Replace this process's figures for ``name@channel`` (atomically; a reader sees old or new)."""
    folder = stats_folder(root, name, channel)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{os.getpid()}.tmp"
    temporary.write_text(json.dumps(figures, sort_keys=True), encoding="utf-8")
    os.replace(temporary, folder / f"{os.getpid()}.json")


def read_stats(root: Path, name: str, channel: str, *, clear: bool = False) -> dict[str, Any]:
    """Every server's figures for ``name@channel`` summed per version: requests, errors, mean latency, labels."""
    folder = stats_folder(root, name, channel)
    total: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            figures = json.loads(read_regular(path, limit=1 << 20))
        except (OSError, ValueError):
            continue
        for ref, one in figures.items() if isinstance(figures, dict) else ():
            into = total.setdefault(ref, {"requests": 0, "errors": 0, "seconds": 0.0, "labels": {}})
            for key in ("requests", "errors", "seconds"):
                into[key] += one.get(key, 0)
            for label, count in (one.get("labels") or {}).items():
                into["labels"][label] = into["labels"].get(label, 0) + count
        if clear:
            path.unlink(missing_ok=True)
    for into in total.values():
        into["mean_latency_ms"] = round(1000 * into.pop("seconds") / into["requests"], 2) if into["requests"] else None
    return total
