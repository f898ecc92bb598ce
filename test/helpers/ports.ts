import { createSocket } from "node:dgram";
import { createServer } from "node:net";

/**
 * A port that is free for TCP (and UDP with `udp`) on `address` right now, found by binding
 * port 0. Tests should rather listen on port 0 themselves; this is for servers that must be told
 * their port in advance (reference servers, containers).
 */
export async function freeLoopbackPort(address = "127.0.0.1", udp = false): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.once("error", reject);
      srv.listen(0, address, () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    if (!udp) return port;
    const ok = await new Promise<boolean>((resolve) => {
      const s = createSocket("udp4");
      s.once("error", () => resolve(false));
      s.bind(port, address, () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error(`no free port found on ${address}`);
}
