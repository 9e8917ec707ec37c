import threading
import time

import pytest

from graph_export.pipeline import Prefetcher, SerialWorker


def test_prefetcher_yields_everything_in_order():
    assert list(Prefetcher(iter(range(100)), depth=2)) == list(range(100))


def test_prefetcher_stays_at_most_depth_items_ahead():
    produced = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    ahead = Prefetcher(source(), depth=2)
    assert next(ahead) == 0
    time.sleep(0.2)  # give the producer every chance to run ahead
    # consumed 1; at most 2 queued, plus 1 produced and waiting for room
    assert len(produced) <= 1 + 2 + 1
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
    time.sleep(0.2)  # the producer fills the queue and waits with one more in hand
    ahead.close()
    assert not first.closed  # the consumer's item is the consumer's to close
    assert len(made) >= 2 and all(r.closed for r in made[1:])
