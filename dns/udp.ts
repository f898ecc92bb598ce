/**
 * The UDP transport: one socket, one datagram per message. A handler that throws (it should not)
 * is logged and the datagram dropped; the socket keeps serving.
 */
import * as dgram from "node:dgram";
import { isIP } from "node:net";
import type { Logger } from "pino";
import type { Client, Reply } from "./engine";

export type Handle = (msg: Buffer, client: Client) => Reply | Promise<Reply>;

export function createUdpSocket(address: string, handle: () => Handle, log: Logger): dgram.Socket {
  const family = isIP(address) === 6 ? 6 : 4;
  // Every address we send to or bind is already an IP literal (from rinfo or the validated
  // config): answer the lookup synchronously instead of dns.lookup's deferred callback, which
  // costs about half a microsecond per datagram.
  const lookup = (addr: string, _family: unknown, cb: (err: Error | null, address: string, family: number) => void) =>
    cb(null, addr, family);
  const sock = dgram.createSocket({ type: family === 6 ? "udp6" : "udp4", lookup: lookup as never });
  const send = (r: Reply, rinfo: dgram.RemoteInfo) => {
    if (!r) return;
    try {
      for (const b of Array.isArray(r) ? r : [r]) sock.send(b, rinfo.port, rinfo.address);
    } catch {
      // The socket closed while a forwarded answer was on its way: nothing to send it from.
    }
  };
  sock.on("message", (msg, rinfo) => {
    let r: Reply | Promise<Reply>;
    try {
      r = handle()(msg, { address: rinfo.address, port: rinfo.port, transport: "udp" });
    } catch (err) {
      log.error({ err, client: rinfo.address }, "DNS handler failed (UDP); datagram dropped");
      return;
    }
    if (r instanceof Promise)
      r.then(
        (x) => send(x, rinfo),
        (err: unknown) => log.error({ err, client: rinfo.address }, "DNS handler failed (UDP)"),
      );
    else send(r, rinfo);
  });
  sock.on("error", (err) => {
    if (sock.listenerCount("error") === 1) log.error({ err }, "DNS UDP socket error");
  });
  return sock;
}

export function bindUdp(sock: dgram.Socket, address: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    sock.once("error", onError);
    sock.bind({ address, port, exclusive: true }, () => {
      sock.off("error", onError);
      try {
        // Room for bursts (dnsperf, floods); the kernel caps it at rmem_max.
        sock.setRecvBufferSize(4 * 1024 * 1024);
        sock.setSendBufferSize(4 * 1024 * 1024);
      } catch {
        // not fatal
      }
      resolve(sock.address().port);
    });
  });
}
