# Prints every callback of one key as a JSON line, until killed or it has seen
# the value given as argv[3].
import asyncio
import json
import sys

from sodp import SodpClient


async def main():
    url, key, stop = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    done = asyncio.Event()
    client = SodpClient(url, reconnect_delay=0.2, max_reconnect_delay=1.0)

    def on_change(value, meta):
        line = {"value": value, "version": meta.version, "source": meta.source}
        print(json.dumps(line), flush=True)
        if value == stop:
            done.set()

    client.watch(key, on_change)
    await client.ready
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.wait_for(done.wait(), 60)
    client.close()


asyncio.run(main())
