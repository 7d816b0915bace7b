"""The batcher alone (no model): batches form under load, the queue is bounded, nothing is lost."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from kit.serve.batching import Batcher, Closed, QueueFull


def recorder(delay: float = 0.0):
    sizes: list[int] = []

    def run(jobs):
        sizes.append(sum(job.size for job in jobs))
        time.sleep(delay)
        return [job.payload * 2 for job in jobs]

    return run, sizes


def test_requests_arriving_together_run_as_one_batch_and_each_gets_its_own_result():
    run, sizes = recorder(delay=0.05)

    async def main():
        batcher = Batcher(run, max_batch_size=8, max_wait_ms=20)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(n) for n in range(20)))
        batcher.close()
        return results

    assert asyncio.run(main()) == [2 * n for n in range(20)]
    assert max(sizes) == 8 and sum(sizes) == 20
    assert len(sizes) <= 4  # 20 requests in batches of up to 8 (the first may run alone while the rest queue)


def test_a_lone_request_is_not_kept_waiting_for_a_batch():
    run, _ = recorder()

    async def main():
        batcher = Batcher(run, max_batch_size=32, max_wait_ms=2000)
        batcher.start()
        await batcher.submit(1)
        started = time.perf_counter()
        await batcher.submit(2)
        elapsed = time.perf_counter() - started
        batcher.close()
        return elapsed

    assert asyncio.run(main()) < 0.5  # far less than the 2 s max wait


def test_a_full_queue_refuses_at_once_and_every_accepted_job_is_answered():
    release = threading.Event()

    def run(jobs):
        release.wait(10)
        return [job.payload for job in jobs]

    async def main():
        batcher = Batcher(run, max_batch_size=4, queue_size=10)
        batcher.start()
        accepted, refused = [batcher.enqueue(0, 1, None)], 0
        while not batcher.busy:  # the worker holds job 0 (alone: it ran as soon as it came) until released
            await asyncio.sleep(0.001)
        for n in range(1, 40):
            try:
                accepted.append(batcher.enqueue(n, 1, None))
            except QueueFull:
                refused += 1
            await asyncio.sleep(0)
        release.set()
        results = await asyncio.wait_for(asyncio.gather(*(job.future for job in accepted)), 10)
        batcher.close()
        return results, refused

    results, refused = asyncio.run(main())
    assert len(results) == 11 and refused == 29  # 1 running, 10 queued, the rest refused at once
    assert results == sorted(results)


def test_jobs_of_different_groups_never_share_a_batch():
    groups: list[set] = []

    def run(jobs):
        groups.append({job.group for job in jobs})
        time.sleep(0.01)
        return [None for _ in jobs]

    async def main():
        batcher = Batcher(run, max_batch_size=16, max_wait_ms=10)
        batcher.start()
        await asyncio.gather(*(batcher.submit(n, 1, n % 3) for n in range(30)))
        batcher.close()

    asyncio.run(main())
    assert all(len(group) == 1 for group in groups)


def test_a_failing_batch_fails_its_jobs_and_the_worker_goes_on():
    def run(jobs):
        if any(job.payload == "boom" for job in jobs):
            raise RuntimeError("boom")
        return [job.payload for job in jobs]

    async def main():
        batcher = Batcher(run, max_batch_size=1)
        batcher.start()
        with pytest.raises(RuntimeError):
            await batcher.submit("boom")
        answer = await batcher.submit("fine")
        batcher.close()
        return answer

    assert asyncio.run(main()) == "fine"


def test_close_answers_what_is_queued_then_refuses_new_work():
    run, sizes = recorder(delay=0.02)

    async def main():
        batcher = Batcher(run, max_batch_size=2)
        batcher.start()
        jobs = [batcher.enqueue(n) for n in range(9)]
        closing = asyncio.get_running_loop().run_in_executor(None, batcher.close)
        results = await asyncio.gather(*(job.future for job in jobs))
        await closing
        with pytest.raises(Closed):
            batcher.enqueue(99)
        return results

    assert asyncio.run(main()) == [2 * n for n in range(9)]
    assert sum(sizes) == 9


def test_a_job_larger_than_a_batch_runs_alone():
    run, sizes = recorder()

    async def main():
        batcher = Batcher(run, max_batch_size=4)
        batcher.start()
        await asyncio.gather(batcher.submit(1, size=10), batcher.submit(2, size=1))
        batcher.close()

    asyncio.run(main())
    assert sorted(sizes) == [1, 10]
