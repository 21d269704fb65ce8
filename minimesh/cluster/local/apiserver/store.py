"""The object store: SQLite (WAL) for durability, an in-memory index for reads, one global
resourceVersion, a bounded history of changes for watches and the fan-out to live watchers.

All mutations are synchronous and run on the event loop thread, so a read-modify-write in a handler
that does not await in between is atomic. Stored objects are never mutated in place: callers pass a
fresh dict and get it back with its new resourceVersion.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
ObjKey = tuple[str, str]  # (namespace or "", name)


class Expired(Exception):
    """The requested resourceVersion is older than the watch history."""


@dataclass(frozen=True)
class Change:
    type: str  # ADDED, MODIFIED, DELETED
    key: str  # resource storage key ("apps/deployments")
    obj: Obj
    old: Obj | None
    rv: int


@dataclass(eq=False)
class Watcher:
    key: str
    namespace: str | None
    limit: int = 20000
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def push(self, change: Change) -> None:
        if self.overflowed:
            return
        if self.queue.qsize() >= self.limit:
            # A watcher that cannot keep up is closed, as the real watch cache does; it re-lists.
            self.overflowed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(change)

    def close(self) -> None:
        self.queue.put_nowait(None)


def _ns_name(obj: Obj) -> ObjKey:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


class Store:
    def __init__(self, db_path: Path | str | None, history: int = 20000):
        self.history: deque[Change] = deque(maxlen=history)
        self.data: dict[str, dict[ObjKey, Obj]] = {}
        self.watchers: dict[str, set[Watcher]] = {}
        self.rv = 0
        self._db: sqlite3.Connection | None = None
        if db_path is not None:
            self._open(str(db_path))
        # Every change after `floor` is in `history`; a watch from an older version gets 410 Expired.
        self.floor = self.rv

    # ---- persistence -------------------------------------------------------------------------
    def _open(self, path: str) -> None:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS objects (key TEXT NOT NULL, ns TEXT NOT NULL, name TEXT NOT NULL,"
            " rv INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (key, ns, name))"
        )
        db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        row = db.execute("SELECT v FROM meta WHERE k='rv'").fetchone()
        self.rv = int(row[0]) if row else 0
        for key, ns, name, data in db.execute("SELECT key, ns, name, data FROM objects"):
            self.data.setdefault(key, {})[(ns, name)] = json.loads(data)
        self._db = db

    def _persist(self, key: str, nk: ObjKey, obj: Obj | None) -> None:
        if self._db is None:
            return
        db = self._db
        db.execute("BEGIN")
        try:
            if obj is None:
                db.execute("DELETE FROM objects WHERE key=? AND ns=? AND name=?", (key, *nk))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO objects (key, ns, name, rv, data) VALUES (?,?,?,?,?)",
                    (key, nk[0], nk[1], self.rv, json.dumps(obj, separators=(",", ":"))),
                )
            db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('rv', ?)", (str(self.rv),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        for ws in self.watchers.values():
            for w in ws:
                w.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    # ---- reads -------------------------------------------------------------------------------
    def get(self, key: str, namespace: str | None, name: str) -> Obj | None:
        return self.data.get(key, {}).get((namespace or "", name))

    def list(self, key: str, namespace: str | None = None) -> list[Obj]:
        """Objects sorted by (namespace, name), like etcd's key order."""
        objs = self.data.get(key, {})
        keys = sorted(k for k in objs if namespace is None or k[0] == namespace)
        return [objs[k] for k in keys]

    def count(self, key: str, namespace: str | None = None) -> int:
        objs = self.data.get(key, {})
        return len(objs) if namespace is None else sum(1 for k in objs if k[0] == namespace)

    def keys(self) -> list[str]:
        return list(self.data)

    # ---- writes ------------------------------------------------------------------------------
    def _stamp(self, obj: Obj) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        return obj

    def create(self, key: str, obj: Obj) -> Obj:
        nk = _ns_name(obj)
        bucket = self.data.setdefault(key, {})
        if nk in bucket:
            raise KeyError(nk)
        self._stamp(obj)
        self._persist(key, nk, obj)
        bucket[nk] = obj
        self._emit(Change("ADDED", key, obj, None, self.rv))
        return obj

    def update(self, key: str, obj: Obj) -> Obj:
        nk = _ns_name(obj)
        bucket = self.data.setdefault(key, {})
        old = bucket[nk]
        self._stamp(obj)
        self._persist(key, nk, obj)
        bucket[nk] = obj
        self._emit(Change("MODIFIED", key, obj, old, self.rv))
        return obj

    def delete(self, key: str, namespace: str | None, name: str) -> Obj:
        nk = (namespace or "", name)
        bucket = self.data.get(key, {})
        old = bucket[nk]
        gone = json.loads(json.dumps(old))
        self._stamp(gone)  # the DELETED event carries the deletion's resourceVersion
        self._persist(key, nk, None)
        del bucket[nk]
        self._emit(Change("DELETED", key, gone, old, self.rv))
        return gone

    # ---- watches -----------------------------------------------------------------------------
    def _emit(self, change: Change) -> None:
        if len(self.history) == self.history.maxlen:
            self.floor = self.history[0].rv
        self.history.append(change)
        for w in list(self.watchers.get(change.key, ())):
            if w.namespace is None or (change.obj["metadata"].get("namespace") or "") == w.namespace:
                w.push(change)

    def changes_since(self, key: str, rv: int) -> Iterator[Change]:
        if rv < self.floor:
            raise Expired(f"too old resource version: {rv} ({self.floor + 1})")
        for c in self.history:
            if c.rv > rv and c.key == key:
                yield c

    def subscribe(self, key: str, namespace: str | None, since: int | None) -> tuple[Watcher, list[Change]]:
        """Register a watcher and return the changes after `since` it missed (atomically)."""
        backlog = list(self.changes_since(key, since)) if since is not None else []
        if namespace is not None:
            backlog = [c for c in backlog if (c.obj["metadata"].get("namespace") or "") == namespace]
        w = Watcher(key, namespace)
        self.watchers.setdefault(key, set()).add(w)
        return w, backlog

    def unsubscribe(self, w: Watcher) -> None:
        self.watchers.get(w.key, set()).discard(w)

    def close_watchers(self, key: str, pred: Callable[[Watcher], bool] = lambda w: True) -> None:
        for w in list(self.watchers.get(key, ())):
            if pred(w):
                w.close()
