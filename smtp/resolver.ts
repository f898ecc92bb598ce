/**
 * Reverse lookups of SMTP clients, only through the resolvers the stack names and only when
 * `reverseLookups` is on. Queries are sent here with dns-packet over UDP, so neither the
 * machine's resolver nor /etc/hosts (which c-ares consults for reverse lookups) is ever used.
 * A name counts only when it resolves back to the client's address (forward-confirmed, as
 * Postfix does before it believes a name); results are cached for a minute.
 */
import { randomInt } from "node:crypto";
import * as dgram from "node:dgram";
import { isIP } from "node:net";
import * as dnsPacket from "dns-packet";
import type { Logger } from "pino";
import type { MailConfig } from "../config/schema";
import { toBits, unmapV4 } from "../lib/cidr";
import type { ReverseResolver } from "./context";

const HOSTNAME = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;
const TIMEOUT_MS = 2000;
const CACHE_MS = 60_000;
const CACHE_MAX = 10_000;

interface Server {
  host: string;
  port: number;
}

/** `ip`, `ip:port` or `[ipv6]:port` → address and port (53 by default). */
export function parseServer(s: string): Server | null {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (v6) return isIP(v6[1]!) === 6 ? { host: v6[1]!, port: Number(v6[2] ?? 53) } : null;
  if (isIP(s) !== 0) return { host: s, port: 53 };
  const m = /^([\d.]+):(\d+)$/.exec(s);
  if (m && isIP(m[1]!) === 4) return { host: m[1]!, port: Number(m[2]) };
  return null;
}

/** The PTR owner name of an address (RFC 1035 §3.5, RFC 3596 §2.5). */
export function ptrName(address: string): string {
  const a = unmapV4(address);
  if (isIP(a) === 4) return `${a.split(".").reverse().join(".")}.in-addr.arpa`;
  const hex = (toBits(a) ?? 0n).toString(16).padStart(32, "0");
  return `${hex.split("").reverse().join(".")}.ip6.arpa`;
}

/** One question to the configured servers in turn; the answers' data of `type`, or null. */
async function query(servers: Server[], name: string, type: "PTR" | "A" | "AAAA"): Promise<string[] | null> {
  for (const server of servers) {
    const result = await queryOne(server, name, type).catch(() => null);
    if (result) return result;
  }
  return null;
}

function queryOne(server: Server, name: string, type: "PTR" | "A" | "AAAA"): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const id = randomInt(0, 65536);
    const sock = dgram.createSocket(isIP(server.host) === 6 ? "udp6" : "udp4");
    const done = (err: Error | null, value?: string[]) => {
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve(value!);
    };
    const timer = setTimeout(() => done(new Error("timeout")), TIMEOUT_MS);
    sock.on("error", (err) => done(err));
    sock.on("message", (msg, rinfo) => {
      if (rinfo.port !== server.port) return;
      let p: dnsPacket.Packet;
      try {
        p = dnsPacket.decode(msg);
      } catch {
        return;
      }
      const q = p.questions?.[0];
      if (p.id !== id || p.type !== "response" || !q || q.name.toLowerCase() !== name.toLowerCase()) return;
      const rcode = (p.flags ?? 0) & 0xf;
      if (rcode === 3) return done(null, []); // NXDOMAIN: a final answer
      if (rcode !== 0) return done(new Error(`rcode ${rcode}`));
      const data = (p.answers ?? []).filter((a) => a.type === type).map((a) => String((a as { data: unknown }).data));
      done(null, data);
    });
    const packet = dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: "IN" }] });
    sock.send(packet, server.port, server.host);
  });
}

export function createReverseResolver(config: MailConfig, log: Logger): ReverseResolver | null {
  if (!config.reverseLookups) return null;
  const servers = config.resolvers.map((s) => ({ s, parsed: parseServer(s) }));
  for (const { s, parsed } of servers) if (!parsed) log.warn({ resolver: s }, "ignoring a resolver that is not ip[:port]");
  const usable = servers.map((x) => x.parsed).filter((x): x is Server => x !== null);
  if (usable.length === 0) {
    log.warn("reverseLookups is on but no resolvers are configured; reverse lookups stay off");
    return null;
  }
  const cache = new Map<string, { name: string | null; until: number }>();

  const lookup = async (address: string): Promise<string | null> => {
    const a = unmapV4(address);
    const names = (await query(usable, ptrName(a), "PTR")) ?? [];
    const family = isIP(a);
    for (const raw of names.slice(0, 3)) {
      const name = raw.replace(/\.$/, "").toLowerCase();
      if (!HOSTNAME.test(name)) continue;
      const forward = (await query(usable, name, family === 6 ? "AAAA" : "A")) ?? [];
      if (forward.some((f) => toBits(f) !== null && toBits(f) === toBits(a))) return name;
    }
    return null;
  };

  return {
    async lookup(address: string): Promise<string | null> {
      const now = Date.now();
      const hit = cache.get(address);
      if (hit && hit.until > now) return hit.name;
      const name = await lookup(address).catch(() => null);
      if (cache.size >= CACHE_MAX) cache.clear();
      cache.set(address, { name, until: now + CACHE_MS });
      return name;
    },
  };
}
