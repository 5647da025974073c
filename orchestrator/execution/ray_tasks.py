"""The Ray remote functions and actors; imported only where Ray is (the executor and its workers).

A run's events (its start, its learning-curve points) are buffered in its worker process and sent to the inbox in
batches: ``ctx.report`` appends to a list (microseconds) where an actor call per point cost about a millisecond and
capped the whole study at the single actor's call rate. A batch leaves every ``FLUSH_S`` seconds, at
``FLUSH_POINTS`` points, and at the end of the run (with its result), in order. The "started" event alone is sent at
once, and the run waits for it to be in the inbox before its experiment starts: a worker killed at once must still
leave its start in the attempt log. The result says how many batches of points the run sent, so the driver drains
the inbox before a result only when some are not drained yet (a run shorter than ``FLUSH_S`` sends none, which is
what makes short runs cheap to launch). What a killed attempt
loses: the points of its last unsent batch (at most ``FLUSH_S`` of reports); never a result, which is only ever the
task's return value. Heartbeats are sent by a thread of their own, apart from the batches.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from typing import Any

import ray

from orchestrator.execution.worker import run_cell

FLUSH_S = 0.5  # a buffered run's events leave at least this often
FLUSH_POINTS = 1000  # ... or once this many are waiting
NODES_REFRESH_S = 10.0  # how often the driver looks for new nodes to give an inbox
INBOX_START_S = 60.0  # the most the driver waits for its inboxes to start (a dying node's need not hold it up)


@ray.remote
class Inbox:
    """Collects worker events (run started, learning-curve points) and heartbeats until the driver drains them.

    Every event and heartbeat carries its (cell key, attempt), so the driver can drop what a killed attempt sent late.
    """

    def __init__(self) -> None:
        self._batches: list[tuple[str, int, list[tuple[str, Any]]]] = []
        self._beats: set[tuple[str, int]] = set()
        self._stop: set[tuple[str, int]] = set()

    def put(self, cell_key: str, attempt: int, items: list[tuple[str, Any]]) -> bool:
        """Take a batch of one attempt's events, (kind, data) in order; the reply says whether the driver has pruned
        that attempt."""
        self._batches.append((cell_key, attempt, items))
        return (cell_key, attempt) in self._stop

    def stop(self, cell_key: str, attempt: int) -> None:
        """The driver pruned this attempt: the reply to its next batch says so."""
        self._stop.add((cell_key, attempt))

    def beat(self, cell_key: str, attempt: int) -> None:
        self._beats.add((cell_key, attempt))

    def drain(self) -> tuple[list[tuple[str, int, list[tuple[str, Any]]]], set[tuple[str, int]]]:
        """(batches in order, the attempts that sent a heartbeat) since the last drain."""
        batches, self._batches = self._batches, []
        beats, self._beats = self._beats, set()
        return batches, beats

    def node(self) -> str:
        """The node this inbox lives on."""
        return ray.get_runtime_context().get_node_id()


class Inboxes:
    """One inbox actor per alive node, each pinned to its node (strictly: Ray's soft affinity placed them on each
    other's nodes in a two-node test), so no single actor carries every worker's batches; a worker uses its own
    node's. New nodes (an autoscaler's) get theirs within NODES_REFRESH_S of the next launch; their workers use
    another node's meanwhile."""

    def __init__(self) -> None:
        self.by_node: dict[str, Any] = {}
        self._looked = -math.inf
        # Up before the first run is submitted: an actor's process takes a second or two to start, and every run's
        # "started" waits for its inbox. (A node found later gets its inbox without waiting.)
        refs = [inbox.node.remote() for inbox in self.handles().values()]
        ray.wait(refs, num_returns=len(refs), timeout=INBOX_START_S)

    def handles(self) -> dict[str, Any]:
        """{node id: inbox}, refreshed at most every NODES_REFRESH_S: what a task is given."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if time.monotonic() - self._looked >= NODES_REFRESH_S:
            self._looked = time.monotonic()
            for node in ray.nodes():
                node_id = node["NodeID"]
                if node.get("Alive") and node_id not in self.by_node:
                    strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
                    self.by_node[node_id] = Inbox.options(num_cpus=0, scheduling_strategy=strategy).remote()
        return self.by_node

    def drain(self) -> tuple[list[tuple[str, int, list[tuple[str, Any]]]], set[tuple[str, int]]]:
        """Every inbox's batches and heartbeats (one call each, all at once); an inbox whose node died is dropped
        (its runs' results say what happened to them)."""
        refs = {node: inbox.drain.remote() for node, inbox in self.by_node.items()}
        batches, beats = [], set()
        for node, ref in refs.items():
            try:
                got, heard = ray.get(ref)
            except ray.exceptions.RayActorError:
                # Its node died, or its process did (the OOM killer): the next launch looks again, and a node still
                # alive gets a new inbox at once. Its runs' batches go back with their results meanwhile (Outbox).
                del self.by_node[node]
                self._looked = -math.inf
                continue
            batches += got
            beats |= heard
        return batches, beats

    def stop(self, cell_key: str, attempt: int) -> None:
        for inbox in self.by_node.values():
            inbox.stop.remote(cell_key, attempt)

    def close(self) -> None:
        for inbox in self.by_node.values():
            ray.kill(inbox)


def pick(inboxes: dict[str, Any]) -> Any:
    """This worker's inbox: its node's, or (a node too new to have one) one chosen by the node id, never None."""
    node = ray.get_runtime_context().get_node_id()
    if node in inboxes:
        return inboxes[node]
    names = sorted(inboxes)
    return inboxes[names[int(node[:8], 16) % len(names)]]


@functools.cache
def run_cell_task(max_calls: int) -> Any:
    """The remote run function with this ``max_calls`` (Ray only takes it at decoration, not in .options())."""
    return ray.remote(max_calls=max_calls)(_run_cell)


class Outbox:
    """A run's buffered events, sent to the inbox by the process's flusher thread (one per worker process, started
    once: a thread per run cost more than the run's own bookkeeping); the replies say whether it was pruned."""

    _lock = threading.Lock()
    _current: Outbox | None = None  # the run the process serves now
    _attached = threading.Event()
    _thread: threading.Thread | None = None

    def __init__(self, inbox: Any, key: str, attempt: int):
        self.inbox, self.key, self.attempt = inbox, key, attempt
        self.items: list[tuple[str, Any]] = []  # (kind, data): the key and attempt go once per batch
        self.lock = threading.Lock()  # guards items
        self.sending = threading.Lock()  # one batch in flight at a time, so batches arrive in order
        self.wake = threading.Event()
        self.closed = threading.Event()
        self.stopped = False  # the driver pruned this attempt
        self.sent = 0  # batches of points in the inbox (the "started" batch aside): see the module's docstring
        self.delivered = threading.Event()  # the "started" event is in the inbox (or the inbox is unreachable)
        self.unreachable = False  # a put failed: what is left goes back with the result
        cls = type(self)
        with cls._lock:
            cls._current = self
            if cls._thread is None or not cls._thread.is_alive():
                cls._thread = threading.Thread(target=cls._loop, name="wavesweep-flush", daemon=True)
                cls._thread.start()
        cls._attached.set()

    def add(self, kind: str, data: Any) -> bool:
        """Buffer an event; True once the driver has pruned the run (learnt from an earlier batch's reply)."""
        with self.lock:
            self.items.append((kind, data))
            if kind == "started" or len(self.items) >= FLUSH_POINTS:
                self.wake.set()
        if kind == "started":
            # Sent by the flusher and waited for on a threading event, not with ray.get in the task's own thread
            # (Ray counts a task blocked in ray.get as idle and starts more worker processes meanwhile).
            self.delivered.wait()
        return self.stopped

    @classmethod
    def _loop(cls) -> None:
        while True:
            with cls._lock:
                box = cls._current
            if box is None or box.closed.is_set():
                # No run, or one that has just ended (its close() may not have detached it yet): wait for the next
                # run, not on this one's event, or the next run's "started" would wait a whole FLUSH_S.
                cls._attached.wait()
                cls._attached.clear()
                continue
            box.wake.wait(FLUSH_S)
            box.wake.clear()
            if not box.closed.is_set():
                box._send()

    def _send(self) -> None:
        with self.sending:
            if self.unreachable:
                return  # what is buffered goes back with the result
            with self.lock:
                items, self.items = self.items, []
            if not items:
                return
            # Waited for here, in the flusher thread (the run goes on): the reply carries the prune verdict, and the
            # next batch leaves only after this one is in the inbox.
            try:
                self.stopped = ray.get(self.inbox.put.remote(self.key, self.attempt, items)) or self.stopped
                self.sent += any(kind != "started" for kind, _ in items)
            except ray.exceptions.RayError:
                # The inbox died: this batch and every later one go back with the result, in order (the run's
                # heartbeats are lost with the inbox, so the driver may kill it as lost; its points are kept).
                self.unreachable = True
                with self.lock:
                    self.items[:0] = items
            self.delivered.set()

    def close(self) -> list[tuple[str, Any]]:
        """Detach from the flusher; the events not yet sent, which go back with the run's result (no call, no
        wait)."""
        self.closed.set()
        self.wake.set()
        with self.sending:  # a batch in flight reaches the inbox before the result can (the driver drains first)
            with self.lock:
                items, self.items = self.items, []
        cls = type(self)
        with cls._lock:
            if cls._current is self:
                cls._current = None
        return items


class Heartbeat:
    """One thread per worker process beats for the run it is serving, so it needs nothing from the experiment (which
    may never call ctx.report). It stops when the process dies or is frozen, which is what the driver watches for."""

    _lock = threading.Lock()
    _current: tuple[Any, str, int, float] | None = None  # (inbox, cell key, attempt, interval)
    _thread: threading.Thread | None = None
    _wake = threading.Event()

    @classmethod
    def serve(cls, inbox: Any, key: str, attempt: int, interval: float) -> None:
        with cls._lock:
            cls._current = (inbox, key, attempt, interval)
            if cls._thread is None or not cls._thread.is_alive():
                cls._thread = threading.Thread(target=cls._loop, name="wavesweep-heartbeat", daemon=True)
                cls._thread.start()
            cls._wake.set()  # a new run, perhaps a shorter interval

    @classmethod
    def idle(cls) -> None:
        with cls._lock:
            cls._current = None

    @classmethod
    def _loop(cls) -> None:
        interval = 1.0
        while True:
            if cls._wake.wait(interval):  # a new run: start its interval afresh (its start counts as a beat)
                cls._wake.clear()
                with cls._lock:
                    interval = cls._current[3] if cls._current else 1.0
                continue
            with cls._lock:
                current = cls._current
            if current is not None:
                inbox, key, attempt, interval = current
                inbox.beat.remote(key, attempt)


def _run_cell(payload: dict[str, Any], inboxes: dict[str, Any]) -> dict[str, Any]:
    key, attempt = payload["cell_key"], payload["attempt"]
    inbox = pick(inboxes)
    outbox = Outbox(inbox, key, attempt)
    Heartbeat.serve(inbox, key, attempt, payload["heartbeat_s"])
    try:
        gpu_ids = tuple(int(g) for g in ray.get_gpu_ids())
        result = run_cell(payload, outbox.add, gpu_ids)
    finally:
        Heartbeat.idle()
        tail = outbox.close()
    result["tail"], result["batches"] = tail, outbox.sent  # the tail comes after every batch sent
    return result
