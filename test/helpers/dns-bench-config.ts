/**
 * The DNS benchmark's load, shared by the team benchmark (bench/scenarios/dns.ts) and the DNS
 * server's own alternating-rounds script (test/dns/bench.ts), so both measure the same thing.
 */

/** dnsperf's load options: 4 clients, 200 queries in flight, 2 s timeout. */
export const DNSPERF_LOAD: readonly string[] = ["-c", "4", "-q", "200", "-t", "2"];

/**
 * A dnsperf query file of `n` lines in a fixed mix: A 30 %, MX 20 %, TXT 15 % (SPF, DMARC),
 * SOA 10 %, NXDOMAIN 25 % with fresh random names under lx.com, so that no answer cache can serve
 * everything. `rnd` (uniform in [0, 1)) picks the lines; a seeded one gives the same file every
 * time.
 */
export function dnsQueryFile(n: number, rnd: () => number): string {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const x = rnd();
    if (x < 0.2) lines.push("mail.lx.com A");
    else if (x < 0.3) lines.push("ns1.lx.com A");
    else if (x < 0.5) lines.push("lx.com MX");
    else if (x < 0.58) lines.push("lx.com TXT");
    else if (x < 0.65) lines.push("_dmarc.lx.com TXT");
    else if (x < 0.75) lines.push("lx.com SOA");
    else lines.push(`nx${Math.floor(rnd() * 1e9).toString(36)}.lx.com A`);
  }
  return `${lines.join("\n")}\n`;
}
