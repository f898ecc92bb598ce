/**
 * The TCP transport (RFC 7766): two-octet length-prefixed messages, any number of queries per
 * connection, answered as each completes (pipelining; forwarded ones may come back out of order,
 * which §6.2.1.1 allows), an idle timeout, caps on connections (in all and per client address),
 * and back-pressure: a client that sends faster than it reads is paused while more than 1 MiB of
 * answers waits for it.
 * A message too short to carry a header ends the connection (there is no ID to answer).
 */
import * as net from "node:net";
import type { Logger } from "pino";
import type { Reply } from "./engine";
import type { Handle } from "./udp";

const MAX_BUFFERED = 1 << 20;

export interface TcpOptions {
  idleTimeoutMs: number;
  /** All connections together (config limits.maxConnections). */
  maxConnections: number;
  /** Connections from one address (config limits.connectionsPerClient); more are closed at once. */
  connectionsPerClient: number;
}

export function createTcpServer(handle: () => Handle, opts: TcpOptions, log: Logger): { server: net.Server; sockets: Set<net.Socket> } {
  const sockets = new Set<net.Socket>();
  const perClient = new Map<string, number>();
  const server = net.createServer({ noDelay: true }, (sock) => {
    const address = sock.remoteAddress ?? "";
    const port = sock.remotePort ?? 0;
    const open = (perClient.get(address) ?? 0) + 1;
    if (open > opts.connectionsPerClient) {
      sock.destroy();
      return;
    }
    perClient.set(address, open);
    sockets.add(sock);
    sock.on("close", () => {
      const n = (perClient.get(address) ?? 1) - 1;
      if (n <= 0) perClient.delete(address);
      else perClient.set(address, n);
    });
    let buf: Buffer = Buffer.alloc(0);
    sock.setTimeout(opts.idleTimeoutMs, () => sock.destroy());
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => {});
    const write = (r: Reply) => {
      if (!r || sock.destroyed) return;
      for (const m of Array.isArray(r) ? r : [r]) {
        const framed = Buffer.allocUnsafe(m.length + 2);
        framed.writeUInt16BE(m.length, 0);
        m.copy(framed, 2);
        sock.write(framed);
      }
      if (sock.writableLength > MAX_BUFFERED && !sock.isPaused()) {
        sock.pause();
        sock.once("drain", () => sock.resume());
      }
    };
    sock.on("data", (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < len + 2) break;
        const msg = buf.subarray(2, len + 2);
        buf = buf.subarray(len + 2);
        if (len < 12) {
          sock.destroy();
          return;
        }
        let r: Reply | Promise<Reply>;
        try {
          r = handle()(msg, { address, port, transport: "tcp" });
        } catch (err) {
          log.error({ err, client: address }, "DNS handler failed (TCP); closing the connection");
          sock.destroy();
          return;
        }
        if (r instanceof Promise)
          r.then(write, (err: unknown) => {
            log.error({ err, client: address }, "DNS handler failed (TCP)");
            sock.destroy();
          });
        else write(r);
      }
    });
  });
  server.maxConnections = opts.maxConnections;
  return { server, sockets };
}

export function listenTcp(server: net.Server, address: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once("error", onError);
    server.listen({ host: address, port, exclusive: true }, () => {
      server.off("error", onError);
      server.on("error", () => {});
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}
