"""The work-queue pair end to end: exactly once, fair dispatch, crash and SIGTERM behaviour."""

from __future__ import annotations

import signal
from collections.abc import Callable

import psutil

from conveyor.producer.submission.submitter import Submitter, TaskSubmission
from conveyor.shared.records import TaskStatus
from tests.support import EventLog, ServiceProcess, wait_until


async def test_500_echo_tasks_two_consumers_each_processed_exactly_once(
    submitter: Submitter, events: EventLog, spawn: Callable[..., ServiceProcess]
) -> None:
    consumers = [spawn("consumer"), spawn("consumer")]
    tasks = await submitter.submit_many(
        [TaskSubmission(task="echo", payload={"n": n}) for n in range(500)]
    )
    ids = {task.id for task in tasks}
    assert len(ids) == 500

    await events.wait_finished(ids, timeout_s=60)

    succeeded = events.succeeded_count()
    assert set(succeeded) == ids
    assert all(count == 1 for count in succeeded.values())
    assert events.of_state(TaskStatus.FAILED) == []
    by_worker = events.succeeded_by_worker()
    assert len(by_worker) == 2 and sum(by_worker.values()) == 500
    results = {e.task_id: e.result for e in events.of_state(TaskStatus.SUCCEEDED)}
    assert sorted(r["n"] for r in results.values()) == list(range(500))
    for consumer in consumers:
        consumer.signal(signal.SIGTERM)
        assert await consumer.wait(30) == 0


async def test_equal_sleep_tasks_are_shared_fairly_between_two_consumers(
    submitter: Submitter, events: EventLog, spawn: Callable[..., ServiceProcess]
) -> None:
    a, b = spawn("consumer"), spawn("consumer")
    await a.wait_log("consuming")
    await b.wait_log("consuming")
    tasks = await submitter.submit_many(
        [TaskSubmission(task="sleep", payload={"seconds": 0.1}) for _ in range(40)]
    )

    await events.wait_finished({t.id for t in tasks}, timeout_s=60)

    shares = sorted(events.succeeded_by_worker().values())
    assert sum(shares) == 40
    assert len(shares) == 2
    assert all(14 <= share <= 26 for share in shares), shares  # 35%..65% of 40


async def test_consumer_busy_with_a_long_task_gets_no_more_tasks(
    submitter: Submitter, events: EventLog, spawn: Callable[..., ServiceProcess]
) -> None:
    a, b = spawn("consumer"), spawn("consumer")
    await a.wait_log("consuming")
    await b.wait_log("consuming")
    long_task = await submitter.submit(TaskSubmission(task="sleep", payload={"seconds": 8}))
    stuck = (await events.wait_started(long_task.id)).worker

    quick = await submitter.submit_many(
        [TaskSubmission(task="sleep", payload={"seconds": 0.05}) for _ in range(20)]
    )
    await events.wait_finished({t.id for t in quick}, timeout_s=30)

    workers = {e.worker for e in events.of_state(TaskStatus.SUCCEEDED) if e.task_id != long_task.id}
    assert len(workers) == 1 and stuck not in workers
    assert long_task.id not in events.finished_ids()  # still running: it held only its slot


async def test_sigkilled_consumer_task_is_redelivered_and_completes_elsewhere(
    submitter: Submitter, events: EventLog, spawn: Callable[..., ServiceProcess]
) -> None:
    victim = spawn("consumer")
    await victim.wait_log("consuming")
    task = await submitter.submit(TaskSubmission(task="sleep", payload={"seconds": 2}))
    await events.wait_started(task.id)
    survivor = spawn("consumer")
    await survivor.wait_log("consuming")

    victim.signal(signal.SIGKILL)
    await events.wait_finished({task.id}, timeout_s=30)

    runs = events.runs_of(task.id)
    done = [e for e in events.of_state(TaskStatus.SUCCEEDED) if e.task_id == task.id]
    assert len(runs) == 2
    assert [r.redelivered for r in runs] == [False, True]
    assert len(done) == 1 and done[0].redelivered and done[0].worker == runs[1].worker
    assert runs[0].worker != runs[1].worker


async def test_sigterm_lets_the_running_task_finish_and_ack_then_exits_zero(
    submitter: Submitter, events: EventLog, spawn: Callable[..., ServiceProcess]
) -> None:
    consumer = spawn("consumer", shutdown_grace_s=20)
    await consumer.wait_log("consuming")
    task = await submitter.submit(TaskSubmission(task="sleep", payload={"seconds": 2}))
    await events.wait_started(task.id)

    consumer.signal(signal.SIGTERM)
    assert await consumer.wait(30) == 0

    assert events.succeeded_count()[task.id] == 1
    # Acked, not redelivered: a fresh consumer finds nothing to run.
    follower = spawn("consumer")
    marker = await submitter.submit(TaskSubmission(task="echo", payload={}))
    await events.wait_finished({marker.id}, timeout_s=20)
    runs = events.runs_of(task.id)
    assert len(runs) == 1
    follower.signal(signal.SIGTERM)
    assert await follower.wait(20) == 0


async def test_concurrency_slots_never_hold_a_task_behind_a_busy_slot(
    submitter: Submitter, events: EventLog, spawn: Callable[..., ServiceProcess]
) -> None:
    consumer = spawn("consumer", concurrency=2)
    await consumer.wait_log("consuming")
    long_task = await submitter.submit(TaskSubmission(task="sleep", payload={"seconds": 6}))
    await events.wait_started(long_task.id)
    quick = await submitter.submit_many(
        [TaskSubmission(task="sleep", payload={"seconds": 0.05}) for _ in range(10)]
    )

    await events.wait_finished({t.id for t in quick}, timeout_s=5)

    assert long_task.id not in events.finished_ids()  # the other slot ran all ten meanwhile
    assert len(events.succeeded_by_worker()) == 1


async def test_sigterm_past_the_grace_period_requeues_the_task_instead_of_losing_it(
    submitter: Submitter, events: EventLog, spawn: Callable[..., ServiceProcess]
) -> None:
    impatient = spawn("consumer", shutdown_grace_s=0.5)
    await impatient.wait_log("consuming")
    task = await submitter.submit(TaskSubmission(task="sleep", payload={"seconds": 3}))
    await events.wait_started(task.id)

    impatient.signal(signal.SIGTERM)
    assert await impatient.wait(20) == 0
    assert "requeued" in impatient.log()
    assert task.id not in events.finished_ids()

    spawn("consumer")
    await events.wait_finished({task.id}, timeout_s=30)
    runs = events.runs_of(task.id)
    assert [r.redelivered for r in runs] == [False, True]
    assert events.succeeded_count()[task.id] == 1


async def test_sigkilled_consumer_takes_its_sync_task_child_process_with_it(
    submitter: Submitter, events: EventLog, spawn: Callable[..., ServiceProcess]
) -> None:
    consumer = spawn("consumer", report_running_after_s=0)
    task = await submitter.submit(TaskSubmission(task="cpu", payload={"ms": 60_000}))
    await events.wait_started(task.id)
    children = psutil.Process(consumer.pid).children(recursive=True)
    busy = [child for child in children if child.cpu_percent(interval=0.2) > 10]
    assert busy, "the cpu task runs in a child process"

    consumer.signal(signal.SIGKILL)

    await wait_until(lambda: not any(c.is_running() for c in busy), 10, "the child to die too")
