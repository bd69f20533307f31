"""The writer thread: jobs handled in order, a bounded queue, and its errors surfacing in the caller."""

import threading

import pytest

from mrseg.engine.predict.writer import WriterThread


def test_jobs_are_handled_in_order_and_close_waits_for_all():
    seen = []
    writer = WriterThread(seen.append, maxsize=2)
    for i in range(50):
        writer.put(i)
    writer.close()
    assert seen == list(range(50))


def test_put_blocks_while_the_queue_is_full():
    release = threading.Event()
    writer = WriterThread(lambda job: release.wait(), maxsize=1)
    writer.put(0)  # taken by the thread, which now blocks
    writer.put(1)  # fills the queue
    done = threading.Event()
    threading.Thread(target=lambda: (writer.put(2), done.set()), daemon=True).start()
    assert not done.wait(0.3)
    release.set()
    assert done.wait(5)
    writer.close()


def test_an_error_in_the_thread_is_raised_in_the_caller():
    def handle(job):
        if job == 3:
            raise OSError("disk full")

    writer = WriterThread(handle, maxsize=1)
    with pytest.raises(RuntimeError, match="writing the outputs failed: disk full"):
        for i in range(100):
            writer.put(i)
        writer.close()


def test_system_exit_in_the_thread_reaches_the_caller_as_it_is():
    def handle(job):
        raise SystemExit("killed")

    writer = WriterThread(handle, maxsize=1)
    writer.put(0)
    with pytest.raises(SystemExit, match="killed"):
        writer.close()
