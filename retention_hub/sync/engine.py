"""Sync runs: every (source, stream) pulled incrementally into the store, exactly once.

For each page a connector yields, the engine upserts the records (idempotent by primary key),
quarantines what could not be parsed, and only then saves the page's cursor. A crash therefore
re-reads at most one page, which the upsert absorbs. Sources are pulled concurrently (one thread
each, so one vendor's throttling never slows another); streams of one source run in order.
A source that fails (bad credentials, budget exhausted, retries exhausted) stops alone with its
cursors saved; the run ends "partial" and says why.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable

from ..connectors.http import AuthError, BudgetExhausted, SourceError
from ..connectors.records import Connector
from .store import Store

log = logging.getLogger(__name__)


@dataclass
class StreamResult:
    source: str
    stream: str
    records: int = 0
    deleted: int = 0
    quarantined: int = 0
    pages: int = 0
    calls: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class SyncResult:
    run_id: int
    status: str  # ok | partial | failed
    streams: list[StreamResult] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [f"{s.source}.{s.stream}: {s.error}" for s in self.streams if s.error]


# progress callback: (source, stream, records so far in this stream)
Progress = Callable[[str, str, int], None]


def sync(store: Store, connectors: Iterable[Connector], streams: dict[str, list[str]] | None = None,
         full_refresh: bool = False, progress: Progress | None = None,
         stop: threading.Event | None = None, until: datetime | None = None) -> SyncResult:
    """Pull every stream of every connector (or only `streams[source]`) into `store`.

    `stop`, when set (e.g. on SIGTERM), ends each source after the page in hand is stored.
    `until` is the run's start on the sources' clock (default: now); no cursor moves past it.
    A sandbox whose world was advanced runs ahead of the wall clock, so its tests pass the world's.
    """
    connectors = list(connectors)
    run_id = store.start_run("sync")
    until = until or datetime.now(timezone.utc)
    stop = stop or threading.Event()
    results: list[StreamResult] = []
    lock = threading.Lock()

    def run_source(connector: Connector) -> None:
        chosen = (streams or {}).get(connector.source) or connector.streams()
        for stream in chosen:
            res = StreamResult(connector.source, stream)
            with lock:
                results.append(res)
            if stop.is_set():
                res.error = "stopped before it started"
                continue
            try:
                _sync_stream(store, connector, stream, run_id, until, full_refresh, res, progress, stop)
            except (AuthError, BudgetExhausted) as exc:
                res.error = str(exc)
                log.error("%s", exc)
                return  # nothing else from this source can work now
            except SourceError as exc:
                res.error = str(exc)
                log.error("%s (the other streams go on)", exc)
            finally:
                res.calls = connector.api_calls().get(stream, 0)

    with ThreadPoolExecutor(max_workers=max(1, len(connectors)), thread_name_prefix="sync") as pool:
        for future in [pool.submit(run_source, c) for c in connectors]:
            future.result()
    failed = [r for r in results if r.error]
    status = "ok" if not failed else ("failed" if len(failed) == len(results) else "partial")
    counts = {f"{r.source}.{r.stream}": r.records for r in results}
    if not stop.is_set():  # usage days written by this run, packed for fast reading (a stopped run leaves
        counts["usage_days_packed"] = store.pack_usage()  # them stale: read from their rows until then)
    calls = sum(sum(c.api_calls().values()) for c in connectors)
    message = "; ".join(f"{r.source}.{r.stream}: {r.error}" for r in failed) or None
    store.finish_run(run_id, status, counts=counts, api_calls=calls, errors=len(failed), message=message)
    return SyncResult(run_id, status, results)


def _sync_stream(store: Store, connector: Connector, stream: str, run_id: int, until: datetime,
                 full_refresh: bool, res: StreamResult, progress: Progress | None, stop: threading.Event) -> None:
    started = time.perf_counter()
    cursor = None if full_refresh else store.get_cursor(connector.source, stream)
    try:
        for page in connector.read(stream, cursor, until, full_refresh=full_refresh):
            store.upsert_records(page.records, run_id=run_id)
            for q in page.quarantined:
                store.add_quarantine(run_id, connector.source, q.kind, q.source_id, q.reason, q.raw)
            # the cursor moves only once the page is safely stored
            if page.cursor is not None:
                store.set_cursor(connector.source, stream, page.cursor)
            res.pages += 1
            res.records += len(page.records)
            res.deleted += sum(1 for r in page.records if r.get("deleted"))
            res.quarantined += len(page.quarantined)
            if progress:
                progress(connector.source, stream, res.records)
            if stop.is_set():
                res.error = "stopped on request after a stored page; the next run continues"
                break
    finally:
        res.seconds = time.perf_counter() - started
