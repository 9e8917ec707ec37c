import threading
import time

import pytest

from graph_export.pipeline import Prefetcher, SerialWorker


def test_prefetcher_yields_everything_in_order():
    assert list(Prefetcher(iter(range(100)), depth=2)) == list(range(100))


def wait_until(condition, timeout: float = 5.0) -> None:
    """Poll for a state the other thread must reach; fail if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the producer never got there"
        time.sleep(0.001)


def test_prefetcher_stays_at_most_depth_items_ahead():
    depth, asked, leads = 2, [0], []

    def source():
        for i in range(50):
            leads.append(i + 1 - asked[0])  # made but not asked for yet, this one included
            yield i

    ahead = Prefetcher(source(), depth=depth)
    for expected in range(50):
        # The producer runs until the queue is full and it holds one more, never beyond.
        wait_until(lambda: len(leads) == min(50, asked[0] + depth + 1))
        asked[0] += 1
        assert next(ahead) == expected
    assert max(leads) == depth + 1  # it did run ahead, by exactly what the bound allows
    ahead.close()


def test_prefetcher_reraises_the_producers_error_in_the_consumer():
    def source():
        yield 1
        raise ValueError("page 2 failed")

    ahead = Prefetcher(source())
    assert next(ahead) == 1
    with pytest.raises(ValueError, match="page 2 failed"):
        next(ahead)


def test_prefetcher_close_stops_a_blocked_producer():
    ahead = Prefetcher(iter(range(10_000)), depth=1)
    next(ahead)
    ahead.close()
    assert not ahead._thread.is_alive()


def test_serial_worker_runs_calls_in_order_and_wait_is_a_barrier():
    seen = []
    worker = SerialWorker(depth=2)
    for i in range(20):
        worker.submit(seen.append, i)
    worker.wait()
    assert seen == list(range(20))
    worker.close()


def test_serial_worker_reports_the_first_error_and_runs_nothing_after_it():
    seen = []
    worker = SerialWorker(depth=2)

    def fail():
        raise OSError("upload failed")

    worker.submit(fail)
    worker.submit(seen.append, "after")
    with pytest.raises(OSError, match="upload failed"):
        worker.wait()
    assert seen == []
    worker.close()


def test_serial_worker_submit_blocks_when_full():
    release = threading.Event()
    worker = SerialWorker(depth=1)
    worker.submit(release.wait)          # running
    worker.submit(lambda: None)          # queued: the queue is now full
    blocked = threading.Thread(target=worker.submit, args=(lambda: None,))
    blocked.start()
    blocked.join(timeout=0.2)
    assert blocked.is_alive()            # back-pressure: the producer waits
    release.set()
    blocked.join(timeout=5)
    worker.wait()
    worker.close()


def test_prefetcher_close_closes_items_it_never_handed_out():
    class Response:
        def __init__(self, n):
            self.n, self.closed = n, False

        def close(self):
            self.closed = True

    made = []

    def source():
        for i in range(10):
            made.append(Response(i))
            yield made[-1]

    ahead = Prefetcher(source(), depth=1)
    first = next(ahead)
    wait_until(lambda: len(made) == 3)  # one handed out, one queued (depth 1), one in hand waiting for room
    ahead.close()
    assert not first.closed  # the consumer's item is the consumer's to close
    assert len(made) >= 2 and all(r.closed for r in made[1:])
