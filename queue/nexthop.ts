/**
 * Finding where mail for a domain goes (RFC 5321 §5.1): MX records by preference, randomised
 * among equal preferences; no MX → the domain's own A/AAAA (the implicit MX); a null MX
 * (RFC 7505: one MX with preference 0 and exchange ".") → the domain accepts no mail.
 *
 * Every lookup goes through the resolvers from the config, never the machine's resolver.
 */
import { promises as dnsPromises } from "node:dns";
import { isIP } from "node:net";

export interface Hop {
  /** The MX host name (or the domain itself for the implicit MX, or the relayhost). */
  host: string;
  /** Addresses to try, in order. */
  addresses: string[];
  port: number;
  preference: number;
}

export type NextHopResult =
  | { ok: true; hops: Hop[] }
  /** `permanent` failures bounce; the others are retried. */
  | { ok: false; permanent: boolean; status: string; message: string };

/** Turns `ip` or `ip:port` (`[v6]:port`) into the form `Resolver.setServers` takes. */
export function resolverServer(spec: string): string {
  const s = spec.trim();
  if (isIP(s)) return s;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (bracket && isIP(bracket[1]!) === 6) return bracket[2] ? `[${bracket[1]}]:${bracket[2]}` : bracket[1]!;
  const m = /^([^:]+):(\d+)$/.exec(s);
  if (m && isIP(m[1]!) === 4) return `${m[1]}:${m[2]}`;
  throw new Error(`resolver "${spec}" is not "ip" or "ip:port"`);
}

/**
 * A resolver that asks only `resolvers`. With `localAddress` (the MTA's own address), queries
 * leave from it, so our DNS server sees its own host as the client (and offers it recursion).
 */
export function createResolver(resolvers: string[], localAddress?: string, timeoutMs = 3000): dnsPromises.Resolver {
  const r = new dnsPromises.Resolver({ timeout: timeoutMs, tries: 2 });
  r.setServers(resolvers.map(resolverServer));
  if (localAddress && isIP(localAddress) === 4) r.setLocalAddress(localAddress);
  else if (localAddress && isIP(localAddress) === 6) r.setLocalAddress("0.0.0.0", localAddress);
  return r;
}

/** DNS error codes node reports that mean "this name/type does not exist" (not a failure). */
const NODATA = new Set(["ENODATA"]);
const NXDOMAIN = new Set(["ENOTFOUND"]);

function code(err: unknown): string {
  return (err as NodeJS.ErrnoException)?.code ?? "EUNKNOWN";
}

/** Fisher–Yates, in place. */
function shuffle<T>(a: T[], random: () => number): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/** MX records sorted by preference, equal preferences shuffled (RFC 5321 §5.1). */
export function orderMx(records: { exchange: string; priority: number }[], random = Math.random): { exchange: string; priority: number }[] {
  const byPref = new Map<number, { exchange: string; priority: number }[]>();
  for (const r of records) {
    const list = byPref.get(r.priority) ?? [];
    list.push(r);
    byPref.set(r.priority, list);
  }
  return [...byPref.keys()].sort((a, b) => a - b).flatMap((p) => shuffle(byPref.get(p)!, random));
}

export class NextHopResolver {
  constructor(
    private readonly resolver: dnsPromises.Resolver | null,
    private readonly port: number,
    private readonly random: () => number = Math.random,
  ) {}

  /** Addresses of a host (A, then AAAA), or the error code that stopped us. */
  async addresses(host: string): Promise<{ addresses: string[]; error?: string }> {
    if (isIP(host)) return { addresses: [host] };
    if (!this.resolver) return { addresses: [], error: "ENORESOLVER" };
    const [a, aaaa] = await Promise.allSettled([this.resolver.resolve4(host), this.resolver.resolve6(host)]);
    const addresses = [...(a.status === "fulfilled" ? a.value : []), ...(aaaa.status === "fulfilled" ? aaaa.value : [])];
    if (addresses.length > 0) return { addresses };
    const errs = [a, aaaa].filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => code(r.reason));
    if (errs.length === 2 && errs.every((e) => NXDOMAIN.has(e))) return { addresses: [], error: "ENOTFOUND" };
    const hard = errs.find((e) => !NODATA.has(e) && !NXDOMAIN.has(e));
    return { addresses: [], error: hard ?? "ENODATA" };
  }

  /** A host given directly (relayhost): `[host]` means no MX lookup, as in Postfix. */
  async forHost(spec: string, port: number): Promise<NextHopResult> {
    const literal = /^\[(.+)\]$/.exec(spec);
    const host = literal ? literal[1]! : spec;
    if (!literal && !isIP(host)) return this.forDomain(host, port);
    const { addresses, error } = await this.addresses(host);
    if (addresses.length === 0)
      return { ok: false, permanent: false, status: "4.4.4", message: `relayhost ${host}: no address (${error ?? "none"})` };
    return { ok: true, hops: [{ host, addresses, port, preference: 0 }] };
  }

  async forDomain(domain: string, port = this.port): Promise<NextHopResult> {
    if (!this.resolver)
      return {
        ok: false,
        permanent: false,
        status: "4.4.3",
        message: "no DNS resolvers configured (mailstack:resolvers is empty) and no relayhost; cannot route remote mail",
      };
    // Address literal: user@[192.0.2.1]
    const lit = /^\[(?:ipv6:)?([^\]]+)\]$/i.exec(domain);
    if (lit && isIP(lit[1]!)) return { ok: true, hops: [{ host: lit[1]!, addresses: [lit[1]!], port, preference: 0 }] };

    let mx: { exchange: string; priority: number }[] = [];
    try {
      mx = await this.resolver.resolveMx(domain);
    } catch (err) {
      const c = code(err);
      if (NXDOMAIN.has(c))
        return {
          ok: false,
          permanent: true,
          status: "5.1.2",
          message: `Host or domain name not found. Name service error for name=${domain} type=MX: Host not found`,
        };
      if (!NODATA.has(c))
        return { ok: false, permanent: false, status: "4.4.3", message: `Name service error for name=${domain} type=MX: ${c}` };
    }

    // RFC 7505: a single MX with exchange "." (node gives "") is a null MX.
    if (mx.length > 0 && mx.some((r) => r.exchange === "" || r.exchange === ".")) {
      if (mx.length === 1 || mx.every((r) => r.exchange === "" || r.exchange === "."))
        return { ok: false, permanent: true, status: "5.1.10", message: `Domain ${domain} does not accept mail (nullMX)` };
      mx = mx.filter((r) => r.exchange !== "" && r.exchange !== ".");
    }

    if (mx.length === 0) {
      // RFC 5321 §5.1: no MX → the domain itself is the implicit MX.
      const { addresses, error } = await this.addresses(domain);
      if (addresses.length > 0) return { ok: true, hops: [{ host: domain, addresses, port, preference: 0 }] };
      if (error === "ENOTFOUND" || error === "ENODATA")
        return {
          ok: false,
          permanent: true,
          status: "5.1.2",
          message: `Host or domain name not found. Name service error for name=${domain} type=A: Host not found`,
        };
      return { ok: false, permanent: false, status: "4.4.3", message: `Name service error for name=${domain} type=A: ${error}` };
    }

    const hops: Hop[] = [];
    let lastError = "";
    let allMissing = true;
    for (const r of orderMx(mx, this.random)) {
      const { addresses, error } = await this.addresses(r.exchange);
      if (addresses.length > 0) hops.push({ host: r.exchange, addresses, port, preference: r.priority });
      else {
        lastError = `${r.exchange}: ${error}`;
        if (error !== "ENOTFOUND" && error !== "ENODATA") allMissing = false;
      }
    }
    if (hops.length > 0) return { ok: true, hops };
    // Postfix defers when MX hosts have no address (it may be a transient misconfiguration).
    return {
      ok: false,
      permanent: false,
      status: "4.4.4",
      message: allMissing
        ? `MX host(s) for ${domain} have no address (${lastError})`
        : `Name service error for MX host of ${domain}: ${lastError}`,
    };
  }
}
