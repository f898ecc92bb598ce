/**
 * Real peers for the queue tests, all on loopback: an authoritative DNS responder (dns-packet over
 * UDP and TCP) serving the MX/A records a test needs, and receiving SMTP servers (npm smtp-server)
 * whose answers a test controls per recipient.
 */
import * as dgram from "node:dgram";
import { promises as fs } from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import * as dnsPacket from "dns-packet";
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from "smtp-server";
import { type MailConfig, parseConfig } from "../config/schema";

export type ZoneRecords = Record<string, { MX?: { preference: number; exchange: string }[]; A?: string[]; AAAA?: string[] }>;

export interface ZoneServer {
  address: string;
  port: number;
  /** `ip:port` for config.resolvers. */
  spec: string;
  records: ZoneRecords;
  queries: { name: string; type: string }[];
  close(): Promise<void>;
}

/** Authoritative for every name in `records` and anything under `zones`; NXDOMAIN elsewhere. */
export async function startZoneServer(records: ZoneRecords, address = "127.0.0.1"): Promise<ZoneServer> {
  const queries: { name: string; type: string }[] = [];
  const answer = (msg: Buffer): Buffer | null => {
    let q: dnsPacket.Packet;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return null;
    }
    const question = q.questions?.[0];
    if (!question) return null;
    const name = question.name.toLowerCase().replace(/\.$/, "");
    queries.push({ name, type: question.type });
    const rec = server.records[name];
    const answers: dnsPacket.Answer[] = [];
    if (rec) {
      if (question.type === "MX") for (const mx of rec.MX ?? []) answers.push({ type: "MX", name: question.name, ttl: 60, data: mx });
      if (question.type === "A") for (const a of rec.A ?? []) answers.push({ type: "A", name: question.name, ttl: 60, data: a });
      if (question.type === "AAAA") for (const a of rec.AAAA ?? []) answers.push({ type: "AAAA", name: question.name, ttl: 60, data: a });
    }
    return dnsPacket.encode({
      type: "response",
      id: q.id,
      flags: dnsPacket.AUTHORITATIVE_ANSWER | (rec ? 0 : 3), // rcode 3 = NXDOMAIN
      questions: q.questions,
      answers,
      authorities:
        answers.length === 0
          ? [
              {
                type: "SOA",
                name: "test",
                ttl: 60,
                data: { mname: "ns.test", rname: "hostmaster.test", serial: 1, refresh: 60, retry: 60, expire: 60, minimum: 60 },
              },
            ]
          : [],
    });
  };
  const udp = dgram.createSocket(address.includes(":") ? "udp6" : "udp4");
  udp.on("message", (msg, rinfo) => {
    const out = answer(msg);
    if (out) udp.send(out, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => udp.bind(0, address, resolve));
  const port = udp.address().port;
  const tcp = net.createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const len = buf.readUInt16BE(0);
        const out = answer(buf.subarray(2, 2 + len));
        buf = buf.subarray(2 + len);
        if (out) {
          const l = Buffer.alloc(2);
          l.writeUInt16BE(out.length);
          sock.write(Buffer.concat([l, out]));
        }
      }
    });
    sock.on("error", () => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(port, address, resolve);
  }).catch(() => undefined); // TCP is a nicety (TC fallback); UDP carries the tests.
  const server: ZoneServer = {
    address,
    port,
    spec: `${address}:${port}`,
    records,
    queries,
    close: async () => {
      udp.close();
      await new Promise<void>((r) => tcp.close(() => r()));
    },
  };
  return server;
}

export interface ReceivedMessage {
  from: string;
  to: string[];
  data: Buffer;
  secure: boolean;
  /** Parameters given with MAIL FROM (BODY=8BITMIME, SMTPUTF8, SIZE). */
  mailParams: Record<string, unknown>;
  at: number;
}

export interface Sink {
  address: string;
  port: number;
  messages: ReceivedMessage[];
  /** MAIL transactions seen, whatever their fate. */
  transactions: number;
  connections: number;
  close(): Promise<void>;
}

export interface SinkBehaviour {
  /** Reply for a recipient: undefined accepts; otherwise `{ code, message }`. */
  rcpt?: (address: string, session: SMTPServerSession) => { code: number; message: string } | undefined;
  /** Reply after DATA: undefined accepts. */
  data?: (msg: ReceivedMessage) => { code: number; message: string } | undefined;
  /** Extra delay before answering DATA (ms), to widen crash windows. */
  dataDelayMs?: () => number;
  options?: Partial<SMTPServerOptions>;
}

/** A receiving MTA on `address:port` (port 0 = ephemeral). */
export async function startSink(address: string, port: number, behaviour: SinkBehaviour = {}): Promise<Sink> {
  const sink: Sink = { address, port: 0, messages: [], transactions: 0, connections: 0, close: async () => undefined };
  const err = (code: number, message: string) => Object.assign(new Error(message), { responseCode: code });
  const server = new SMTPServer({
    logger: false,
    disableReverseLookup: true,
    authOptional: true,
    banner: "test sink",
    size: 50 * 1024 * 1024,
    onConnect(_s, cb) {
      sink.connections++;
      cb();
    },
    onMailFrom(_a, _s, cb) {
      sink.transactions++;
      cb();
    },
    onRcptTo(a, session, cb) {
      const r = behaviour.rcpt?.(a.address, session);
      if (r) cb(err(r.code, r.message));
      else cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const msg: ReceivedMessage = {
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          to: session.envelope.rcptTo.map((r) => r.address),
          data: Buffer.concat(chunks),
          secure: session.secure,
          mailParams: (session.envelope.mailFrom ? session.envelope.mailFrom.args : {}) as Record<string, unknown>,
          at: Date.now(),
        };
        const finish = () => {
          const r = behaviour.data?.(msg);
          if (r) return cb(err(r.code, r.message));
          sink.messages.push(msg);
          cb(null, "Ok: queued");
        };
        const d = behaviour.dataDelayMs?.() ?? 0;
        if (d > 0) setTimeout(finish, d);
        else finish();
      });
    },
    ...behaviour.options,
  });
  server.on("error", () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, address, () => resolve());
  });
  sink.port = (server.server.address() as net.AddressInfo).port;
  sink.close = () => new Promise<void>((r) => server.close(() => r()));
  return sink;
}

export async function tempDir(prefix = "mailstack-queue-"): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** A stack config for `queue.test` with user alice, built from the schema like a stack file. */
export function queueConfig(dataDir: string, raw: Record<string, unknown> = {}): MailConfig {
  return parseConfig({
    domain: "queue.test",
    publicAddress: "127.0.0.1",
    dataDir,
    users: [
      { name: "alice", passwordHash: "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$O6bqsQ4AAhOmP1RSyYeRv3NEQDIhwoHPpa2a+KExbJ4" },
    ],
    listen: { address: "127.0.0.1" },
    ...raw,
  });
}

/** Files in a user's INBOX new/ (bounces delivered locally). */
export async function inbox(dataDir: string, user: string): Promise<Buffer[]> {
  const dir = path.join(dataDir, "mail", user, "new");
  const files = await fs.readdir(dir).catch(() => [] as string[]);
  return Promise.all(files.sort().map((f) => fs.readFile(path.join(dir, f))));
}

/** Polls `check` until it returns a truthy value (no timing assertions: only a safety limit). */
export async function waitFor<T>(
  check: () => Promise<T> | T,
  what: string,
  timeoutMs = 20_000,
): Promise<Exclude<T, null | undefined | false | 0 | "">> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v as Exclude<T, null | undefined | false | 0 | "">;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A free TCP port on all the given loopback addresses at once. */
export async function freePortOn(addresses: string[]): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, addresses[0], () => r()));
    const port = (s.address() as net.AddressInfo).port;
    const ok = await Promise.all(
      addresses.slice(1).map(
        (a) =>
          new Promise<boolean>((r) => {
            const t = net.createServer();
            t.once("error", () => r(false));
            t.listen(port, a, () => t.close(() => r(true)));
          }),
      ),
    );
    await new Promise<void>((r) => s.close(() => r()));
    if (ok.every(Boolean)) return port;
  }
  throw new Error("no common free port");
}
