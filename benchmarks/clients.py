"""Background HTTP clients for the benchmarks: each GETs its path, waits, and GETs again."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

import httpx


class Scrapers:
    """Concurrent clients, one per path in `paths`, counting errors and timing each GET.

    Each GETs its path, waits `pause` seconds, and GETs again until stopped: with 4 clients
    and a 2 s pause that is 2 requests a second.
    """

    def __init__(
        self,
        url: str,
        paths: Sequence[str],
        pause: float = 2.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url, self.paths, self.pause = url, list(paths), pause
        self.headers = dict(headers or {})
        self.stop = threading.Event()
        self.ok = 0
        self.errors: list[str] = []
        self.seconds: list[float] = []  # of every successful GET
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(path,), daemon=True) for path in self.paths
        ]

    @property
    def clients(self) -> int:
        return len(self.paths)

    def _run(self, path: str) -> None:
        with httpx.Client(timeout=30, headers=self.headers) as client:
            while not self.stop.is_set():
                error: str | None
                started = time.perf_counter()
                try:
                    status = client.get(f"{self.url}{path}").status_code
                except httpx.HTTPError as exc:
                    error = f"{path}: {type(exc).__name__}"
                else:
                    error = None if status == 200 else f"{path}: HTTP {status}"
                seconds = time.perf_counter() - started
                with self._lock:
                    if error is None:
                        self.ok += 1
                        self.seconds.append(seconds)
                    else:
                        self.errors.append(error)
                self.stop.wait(self.pause)

    def __enter__(self) -> Scrapers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(60)
