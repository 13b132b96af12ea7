"""The per-key gate of asyncio tasks: a bounded wait that never loses the lock or a cancel."""

from __future__ import annotations

import asyncio
import sys

import pytest

from llm_cache.engine.gate import Gates


def test_a_wait_that_runs_out_is_a_timeout_and_the_gate_still_works() -> None:
    async def main() -> None:
        gates = Gates()
        leave = await gates.enter("k")
        assert leave is not None

        async def other() -> None:
            await gates.enter("k", 0.05)

        with pytest.raises(TimeoutError):
            await asyncio.create_task(other())
        leave()
        again = await asyncio.wait_for(asyncio.create_task(gates.enter("k", 1.0)), 2)
        assert again is not None
        again()
        assert not gates._slots  # nothing left behind

    asyncio.run(main())


def test_a_cancel_from_outside_while_waiting_stays_a_cancel_and_takes_nothing() -> None:
    async def main() -> None:
        gates = Gates()
        leave = await gates.enter("k")
        assert leave is not None
        waiter = asyncio.create_task(gates.enter("k", 30))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        leave()
        # the cancelled waiter holds nothing: the next one passes at once
        nxt = await asyncio.wait_for(asyncio.create_task(gates.enter("k", 1.0)), 2)
        assert nxt is not None
        nxt()

    asyncio.run(main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() is 3.11 and newer")
def test_a_task_that_swallowed_an_earlier_cancel_still_gets_a_timeout() -> None:
    async def main() -> None:
        gates = Gates()
        leave = await gates.enter("k")
        assert leave is not None

        async def stubborn() -> str:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                pass  # swallowed: cancelling() stays 1
            try:
                await gates.enter("k", 0.05)
            except TimeoutError:
                return "timeout"
            return "entered"

        assert await asyncio.create_task(stubborn()) == "timeout"
        leave()

    asyncio.run(main())


def test_a_lock_got_just_as_the_wait_ran_out_is_given_back() -> None:
    async def main() -> None:
        gates = Gates()
        leave = await gates.enter("k")
        assert leave is not None
        waiter = asyncio.create_task(gates.enter("k", 0.05))
        await asyncio.sleep(0.049)
        leave()  # the wake-up and the timeout in the same stretch of the loop
        try:
            got = await waiter
        except TimeoutError:
            got = None
        if got is not None:
            got()
        third = await asyncio.wait_for(asyncio.create_task(gates.enter("k", 1.0)), 2)
        assert third is not None  # whichever way it went, the gate was not left held
        third()

    asyncio.run(main())
