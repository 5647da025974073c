"""One driver per study: a lease in the store, taken before anything runs and renewed while the driver lives.

Two `wavesweep run` of the same study would each run its unfinished cells: the same experiments twice, and two
writers of the same rows. The second is refused while the first's lease holds. A driver that dies (kill -9, a lost
node) stops renewing: its lease expires after ``TTL_S`` and the next driver takes the study over. On the same host a
dead driver is recognised at once (its process is gone), so a study restarted after a crash resumes immediately.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self

from orchestrator.errors import WavesweepError

if TYPE_CHECKING:
    from orchestrator.store import Store

log = logging.getLogger(__name__)

TTL_S = 60.0  # a lease not renewed for this long has a dead driver; renewed every TTL_S / 4


class StudyBusy(WavesweepError):
    """Another live driver holds the study's lease."""


class LeaseLost(WavesweepError):
    """This driver's lease expired (it could not renew it in time) and another driver took the study over."""


class StudyLease:
    """``with StudyLease(store, study_id, name):`` holds the study for this process, or raises :class:`StudyBusy`.

    Re-entrant within a process (a nested one for the same study is a no-op), so the CLI may take it before
    starting Ray and ``run_study`` still takes it when called alone."""

    _held: ClassVar[dict[tuple[str, int], StudyLease]] = {}  # (store URL, study id) -> the lease this process holds

    def __init__(self, store: Store, study_id: int, study: str, *, ttl_s: float = TTL_S):
        self.store, self.study_id, self.study, self.ttl_s = store, study_id, study, ttl_s
        self.driver = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None
        self._outer: StudyLease | None = None

    def __enter__(self) -> Self:
        key = (self.store.url, self.study_id)
        if (outer := self._held.get(key)) is not None:
            self._outer = outer
            return outer
        self._take()
        self._held[key] = self
        self._thread = threading.Thread(target=self._renew, name="wavesweep-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._outer is not None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._held.pop((self.store.url, self.study_id), None)
        if self._lost is None:
            self.store.release_lease(self.study_id, self.driver)

    def _take(self) -> None:
        if self.store.take_lease(self.study_id, self.driver, self.ttl_s):
            return
        holder = self.store.lease(self.study_id)
        if holder is None:  # released between the two statements
            if self.store.take_lease(self.study_id, self.driver, self.ttl_s):
                return
            holder = self.store.lease(self.study_id)
        elif _dead_here(holder["driver"]) and self.store.take_lease(self.study_id, self.driver, self.ttl_s,
                                                                    take_from=holder["driver"]):
            log.warning("study %s: took the lease over from %s, whose process is gone", self.study, holder["driver"])
            return
        raise StudyBusy(_busy_message(self.study, holder, self.store.display_url))

    def check(self) -> None:
        """Raise :class:`LeaseLost` if another driver took the study over; the driver calls it while it waits."""
        if self._lost is not None:
            raise LeaseLost(self._lost)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                renewed = self.store.renew_lease(self.study_id, self.driver, self.ttl_s)
            except WavesweepError as exc:  # the store is unreachable: try again; the lease holds for a while
                log.warning("study %s: could not renew the lease: %s", self.study, exc)
                continue
            if not renewed:
                holder = self.store.lease(self.study_id)
                self._lost = (f"study {self.study!r}: this driver ({self.driver}) could not renew its lease in time "
                              f"and {holder['driver'] if holder else 'another driver'} took the study over; "
                              "stopping so that no run is executed twice")
                return


def _dead_here(driver: str) -> bool:
    """Whether ``driver`` ("host:pid:token") ran on this host in a process that no longer exists."""
    host, _, rest = driver.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    try:  # a zombie (dead, not yet reaped by its parent) still answers signal 0
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _busy_message(study: str, holder: dict[str, Any] | None, url: str) -> str:
    if holder is None:
        return f"study {study!r} in {url} is being run by another driver"
    host, _, rest = holder["driver"].partition(":")
    pid = rest.partition(":")[0]
    return (f"study {study!r} in {url} is being run by another driver (host {host}, pid {pid}), since "
            f"{_when(holder['since'])}; its lease runs until {_when(holder['until'])} and is renewed while it lives. "
            "Wait for it to finish (wavesweep status shows its progress); if it died on another machine, run "
            "again after its lease expires.")


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else "-"
