/** A TCP proxy in front of the server, so a test can cut every connection (as a network loss would). */
import { createConnection, createServer, type Server, type Socket } from "node:net";

export interface CutProxy {
  url: string;
  /** Destroy every proxied connection now; new ones are accepted again afterwards unless `refuse`. */
  cut(refuse?: boolean): void;
  accept(): void;
  connections(): number;
  close(): Promise<void>;
}

export async function startProxy(targetPort: number): Promise<CutProxy> {
  const pairs = new Set<[Socket, Socket]>();
  let refusing = false;
  const server: Server = createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = connectPair(client, targetPort, pairs);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  return {
    url: `ws://127.0.0.1:${port}`,
    cut(refuse = false) {
      refusing = refuse;
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
    accept() {
      refusing = false;
    },
    connections: () => pairs.size,
    close: () =>
      new Promise<void>((ok) => {
        for (const [a, b] of pairs) {
          a.destroy();
          b.destroy();
        }
        server.close(() => ok());
      }),
  };
}

/**
 * Opens the upstream side for an accepted `client` and tracks the pair in
 * `pairs`; either side ending or failing ends both. Returns the upstream.
 */
export function connectPair(client: Socket, targetPort: number, pairs: Set<[Socket, Socket]>): Socket {
  const upstream = createConnection({ host: "127.0.0.1", port: targetPort });
  const pair: [Socket, Socket] = [client, upstream];
  pairs.add(pair);
  const end = () => {
    client.destroy();
    upstream.destroy();
    pairs.delete(pair);
  };
  client.on("error", end).on("close", end);
  upstream.on("error", end).on("close", end);
  return upstream;
}
