"""A TCP proxy on 127.0.0.1 that puts a network's round trip between a client and a server.

``python rtt_proxy.py TARGET_PORT RTT_MS`` listens on a free loopback port, prints it, and
forwards every connection to ``127.0.0.1:TARGET_PORT``, each chunk delivered half the
round trip after it arrived, in order, both ways: a Redis on the same machine then answers
as one across a network does (a round trip of 0.5 to 1 ms in one data centre). It stops
when its stdin closes, or after ``--lifetime`` seconds. ``bench_load.py --redis-rtt-ms``
starts it in front of its redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time


async def _carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                writer.close()
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((time.monotonic() + delay, data))
            if not data:
                break
        await delivering
    except (ConnectionError, OSError):
        delivering.cancel()
        writer.close()


async def _serve(target: int, rtt_ms: float, lifetime: float) -> None:
    delay = rtt_ms / 2000

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_carry(reader, up_writer, delay), _carry(up_reader, writer, delay),
                             return_exceptions=True)

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    await asyncio.wait([asyncio.ensure_future(stdin_closed)], timeout=lifetime)
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target_port", type=int)
    parser.add_argument("rtt_ms", type=float)
    parser.add_argument("--lifetime", type=float, default=1800.0)
    args = parser.parse_args()
    asyncio.run(_serve(args.target_port, args.rtt_ms, args.lifetime))


if __name__ == "__main__":
    main()
