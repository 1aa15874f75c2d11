import asyncio
from sodp import SodpClient
async def main():
    client = SodpClient("ws://localhost:7777")
    await client.ready
    # Subscribe
    def on_player(value, meta):
        print(f"player: {value} version={meta.version}")
    unsub = client.watch("game.player", on_player)
    # Mutate
    await client.set("game.player", {"name": "Alice", "health": 100})
    await client.patch("game.player", {"health": 80}) # only health changes
    await asyncio.sleep(1)
    unsub() # remove this callback
    client.close() # close the connection
asyncio.run(main())
