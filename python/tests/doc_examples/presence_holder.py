# Binds a presence path and then waits to be killed (SIGKILL, no cleanup).
import asyncio
import sys

from sodp import SodpClient


async def main():
    client = SodpClient(sys.argv[1])
    await client.ready
    # Bind cursor to this session — auto-removed if the process crashes or disconnects
    await client.presence("collab.cursors", "/alice", {"name": "Alice", "line": 1})
    print("bound", flush=True)
    await asyncio.sleep(3600)


asyncio.run(main())
