# The document's StateRef flow, wrapped in a main() (the URL is the only change).
import asyncio
from sodp import SodpClient


async def main():
    client = SodpClient("ws://localhost:7777")
    await client.ready

    player = client.state("game.player")
    unsub = player.watch(lambda v, m: print(v))
    await player.set({"name": "Alice", "health": 100, "position": {"x": 0, "y": 0}})
    await player.patch({"health": 80})  # only health changes
    await player.set_in("/position/x", 5)  # atomic nested field update
    await player.delete()  # remove the key entirely
    await player.presence("/alice", {"line": 1})  # session-lifetime path
    await asyncio.sleep(0.5)
    current = player.get()  # cached snapshot
    print("current:", current, player.is_watching())
    player.unwatch()  # cancel subscription
    print("after unwatch:", player.get(), player.is_watching())
    unsub()
    client.close()


asyncio.run(main())
