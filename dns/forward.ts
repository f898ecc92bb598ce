/**
 * Forwarding for trusted clients (the seed's `recursion yes` for its LAN): a query for a name
 * outside our zones goes to the configured upstream resolvers in order, each with a timeout.
 *
 * Each attempt uses a fresh socket on a random port and a fresh random ID (RFC 5452), and a reply
 * counts only if it comes from the upstream's address and port with that ID and the same question.
 * A truncated UDP reply is retried over TCP when the client itself came over TCP (a UDP client
 * gets the TC answer and retries over TCP on its own).
 */
import { randomInt } from "node:crypto";
import * as dgram from "node:dgram";
import * as net from "node:net";
import { isIP } from "node:net";
import { unmapV4 } from "../lib/cidr";

export interface HostPort {
  address: string;
  port: number;
}

/** "ip", "ip:port", "[v6]:port" or a bare IPv6 address. Returns null for anything else. */
export function parseHostPort(text: string, defaultPort = 53): HostPort | null {
  const t = text.trim();
  if (isIP(t)) return { address: unmapV4(t), port: defaultPort };
  let m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(t);
  if (!m) m = /^([0-9.]+):(\d{1,5})$/.exec(t);
  if (!m || !isIP(m[1]!)) return null;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return null;
  return { address: unmapV4(m[1]!), port };
}

function questionEnd(buf: Buffer): number {
  let p = 12;
  while (p < buf.length && buf[p] !== 0) p += (buf[p]! & 0xc0) === 0 ? buf[p]! + 1 : buf.length;
  return p + 5;
}

/** Same question (name case-insensitively, type, class). */
function sameQuestion(query: Buffer, reply: Buffer): boolean {
  if (reply.length < 12 || reply.readUInt16BE(4) !== 1 || query.readUInt16BE(4) !== 1) return false;
  const end = questionEnd(query);
  if (end > query.length || end > reply.length) return false;
  return query.subarray(12, end).toString("latin1").toLowerCase() === reply.subarray(12, end).toString("latin1").toLowerCase();
}

function udpAttempt(query: Buffer, up: HostPort, timeoutMs: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket(isIP(up.address) === 6 ? "udp6" : "udp4");
    const id = randomInt(0, 65536);
    const q = Buffer.from(query);
    q.writeUInt16BE(id, 0);
    let done = false;
    const finish = (r: Buffer | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.close();
      resolve(r);
    };
    const timer = setTimeout(() => finish(null), timeoutMs);
    sock.on("error", () => finish(null));
    sock.on("message", (msg, rinfo) => {
      if (unmapV4(rinfo.address) !== up.address || rinfo.port !== up.port) return;
      if (msg.length < 12 || msg.readUInt16BE(0) !== id || !(msg[2]! & 0x80) || !sameQuestion(q, msg)) return;
      finish(msg);
    });
    sock.send(q, up.port, up.address, (err) => {
      if (err) finish(null);
    });
  });
}

function tcpAttempt(query: Buffer, up: HostPort, timeoutMs: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const id = randomInt(0, 65536);
    const q = Buffer.alloc(query.length + 2);
    q.writeUInt16BE(query.length, 0);
    query.copy(q, 2);
    q.writeUInt16BE(id, 2);
    let buf = Buffer.alloc(0);
    let done = false;
    const sock = net.connect({ host: up.address, port: up.port });
    const finish = (r: Buffer | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish(null), timeoutMs);
    sock.on("error", () => finish(null));
    sock.on("connect", () => sock.write(q));
    sock.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 2) return;
      const len = buf.readUInt16BE(0);
      if (buf.length < len + 2) return;
      const msg = buf.subarray(2, len + 2);
      finish(msg.length >= 12 && msg.readUInt16BE(0) === id && sameQuestion(q.subarray(2), msg) ? Buffer.from(msg) : null);
    });
    sock.on("end", () => finish(null));
  });
}

export class Forwarder {
  private readonly upstreams: HostPort[];

  constructor(
    upstream: readonly string[],
    private readonly timeoutMs = 2000,
  ) {
    this.upstreams = upstream.map((u) => parseHostPort(u)).filter((u): u is HostPort => u !== null);
  }

  get available(): boolean {
    return this.upstreams.length > 0;
  }

  /** The upstream's reply with the client's ID restored, or null when no upstream answered. */
  async forward(query: Buffer, overTcp: boolean): Promise<Buffer | null> {
    for (const up of this.upstreams) {
      let reply = await udpAttempt(query, up, this.timeoutMs);
      if (reply && overTcp && reply[2]! & 0x02) reply = (await tcpAttempt(query, up, this.timeoutMs)) ?? reply;
      if (!reply) continue;
      const out = Buffer.from(reply);
      out.writeUInt16BE(query.readUInt16BE(0), 0);
      return out;
    }
    return null;
  }
}
