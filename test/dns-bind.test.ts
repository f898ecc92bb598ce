/**
 * Interop with a real BIND (Debian's named), on loopback ports of its own:
 * - as our secondary: it transfers both zones from us, then after a config change and a restart
 *   of our server it gets our NOTIFY and picks up the new serial and the new record. BIND's
 *   refresh timer is an hour, so within the test only NOTIFY can make it transfer again;
 * - as a primary for the same zones (renderZone's master files): for a set of queries, our
 *   answers and BIND's are the same, section by section.
 *
 * named runs as a child process in a private temp directory (its own pid file, session key and
 * zone files, no rndc, no recursion, no DNSSEC validation, IPv4 only) and is stopped by its PID.
 */
import { promises as fs, writeFileSync } from "node:fs";
import * as path from "node:path";
import { type DnsService, startDns } from "../dns";
import { renderZone, soaOf } from "../dns/zone";
import { silentLogger } from "../lib/log";
import { type DigResult, devConfig, dig, freePort, type Named, namedOptions, startNamed, tempDir, until } from "./dns/helpers";

const tmp = tempDir("mailstack-bind-");
let named: Named | undefined;
let ours: DnsService | undefined;

afterAll(async () => {
  await named?.stop();
  await ours?.close();
  tmp.cleanup();
});

const serialOf = (s: DnsService, origin: string) => soaOf(s.zones().find((z) => z.origin === origin)!).data.serial;

async function bindSerial(port: number, zone: string): Promise<number | null> {
  const r = await dig(port, [zone, "SOA", "+norec"]);
  if (r.status !== "NOERROR" || !r.flags.includes("aa")) return null;
  const soa = r.answer.find((a) => a.type === "SOA");
  return soa ? Number(soa.data.split(" ")[2]) : null;
}

test("BIND transfers our zones with AXFR, and follows a change through NOTIFY", async () => {
  const bindPort = await freePort();
  const dataDir = path.join(tmp.dir, "data");
  const cfg = (records: unknown[] = [], port = 0) =>
    devConfig(dataDir, { listen: { dns: port }, dns: { secondaries: [`127.0.0.1:${bindPort}`], records } });

  // Two UDP threads: BIND's acknowledgements may reach the worker thread's socket, which passes them on.
  ours = await startDns(cfg(), { log: silentLogger, notifyRetryMs: 200, notifyAttempts: 2, udpThreads: 2 });
  const ourPort = ours.listeners[0]!.port;
  const zones = ours.zones().map((z) => z.origin);
  const zoneConf = zones
    .map((z) => `zone "${z}" { type secondary; primaries port ${ourPort} { 127.0.0.1; }; file "${z}.db"; };`)
    .join("\n");
  named = await startNamed(path.join(tmp.dir), `${namedOptions()}\n${zoneConf}\n`, bindPort, "lx.com").catch((err: Error) => {
    throw new Error(`named could not start as a secondary: ${err.message}`);
  });

  // 1. The initial transfer: BIND serves our serial and our records, authoritatively.
  const first = serialOf(ours, "lx.com");
  await until(async () => (await bindSerial(bindPort, "lx.com")) === first, 10_000, "BIND to load lx.com");
  await until(
    async () => (await bindSerial(bindPort, "0.0.127.in-addr.arpa")) === serialOf(ours!, "0.0.127.in-addr.arpa"),
    10_000,
    "the reverse zone",
  );
  const mx = await dig(bindPort, ["lx.com", "MX", "+norec"]);
  expect(mx.flags).toContain("aa");
  expect(mx.answer.map((a) => a.data)).toEqual(["10 mail.lx.com."]);
  expect((await dig(bindPort, ["_imaps._tcp.lx.com", "SRV", "+norec"])).answer.map((a) => a.data)).toEqual(["0 1 993 mail.lx.com."]);
  expect((await dig(bindPort, ["-x", "127.0.0.1", "+norec"])).answer.map((a) => a.data)).toEqual(["mail.lx.com."]);
  expect(named.log()).toMatch(/transfer of 'lx\.com\/IN' from 127\.0\.0\.1#\d+: Transfer status: success/);

  const reverseSerial = serialOf(ours, "0.0.127.in-addr.arpa");

  // 2. A config change, then a restart on the same port: a higher serial, a NOTIFY, a new transfer.
  await ours.close();
  ours = await startDns(cfg([{ name: "added", type: "A", value: "192.0.2.99" }], ourPort), {
    log: silentLogger,
    notifyRetryMs: 500,
    notifyAttempts: 4,
    udpThreads: 2,
  });
  const second = serialOf(ours, "lx.com");
  expect(second).toBe(first + 1);
  expect(serialOf(ours, "0.0.127.in-addr.arpa")).toBe(reverseSerial); // unchanged zone, unchanged serial
  const acks = await ours.notified;
  expect(acks).toEqual([{ zone: "lx.com", target: `127.0.0.1#${bindPort}`, acknowledged: true, rcode: 0 }]);
  await until(async () => (await bindSerial(bindPort, "lx.com")) === second, 10_000, "BIND to pick up the new serial");
  expect((await dig(bindPort, ["added.lx.com", "A", "+norec"])).answer.map((a) => a.data)).toEqual(["192.0.2.99"]);
  expect(named.log()).toMatch(/zone lx\.com\/IN: notify from 127\.0\.0\.1#\d+: serial \d+/);

  // 3. A reload without a restart does the same.
  const r = await ours.reload(cfg([{ name: "added", type: "A", value: "192.0.2.100" }], ourPort));
  expect(r.changed).toEqual(["lx.com"]);
  expect((await ours.notified)[0]!.acknowledged).toBe(true);
  await until(async () => (await bindSerial(bindPort, "lx.com")) === second + 1, 10_000, "BIND to follow the reload");
  expect((await dig(bindPort, ["added.lx.com", "A", "+norec"])).answer.map((a) => a.data)).toEqual(["192.0.2.100"]);
}, 60_000);

test("the same answers as BIND serving the same zones (rendered with renderZone)", async () => {
  const dataDir = path.join(tmp.dir, "same");
  const config = devConfig(dataDir, {
    dns: {
      records: [
        { name: "www", type: "CNAME", value: "web.lx.com" },
        { name: "web", type: "CNAME", value: "mail.lx.com" },
        { name: "out", type: "CNAME", value: "mail.example.net" },
        { name: "*.wild", type: "A", value: "192.0.2.80" },
        { name: "sub", type: "NS", value: "ns.sub.lx.com" },
        { name: "ns.sub", type: "A", value: "192.0.2.53" },
        { name: "@", type: "CAA", value: '0 issue "letsencrypt.org"' },
        { name: "sel._domainkey", type: "TXT", value: `v=DKIM1; p=${"k".repeat(300)}` },
        ...Array.from({ length: 24 }, (_, i) => ({ name: "big", type: "TXT", value: `big record ${i} `.padEnd(60, "x") })),
      ],
    },
  });
  const s = await startDns(config, { log: silentLogger });
  const dir = path.join(tmp.dir, "primary");
  await fs.mkdir(dir, { recursive: true });
  const zoneConf = s
    .zones()
    .map((z) => {
      writeFileSync(path.join(dir, `${z.origin}.zone`), renderZone(z));
      return `zone "${z.origin}" { type primary; file "${z.origin}.zone"; };`;
    })
    .join("\n");
  // Our answers leave the NS set out of the authority section of positive answers but keep
  // addresses for MX/SRV/NS targets in the additional section: BIND's "minimal-responses no-auth".
  const primary = await startNamed(dir, `${namedOptions("minimal-responses no-auth;")}\n${zoneConf}\n`, await freePort(), "lx.com");
  try {
    const queries = [
      ["lx.com", "MX"],
      ["lx.com", "SOA"],
      ["lx.com", "NS"],
      ["lx.com", "TXT"],
      ["lx.com", "CAA"],
      ["mail.lx.com", "A"],
      ["MAIL.LX.COM", "A"],
      ["mail.lx.com", "MX"],
      ["nothere.lx.com", "A"],
      ["_tcp.lx.com", "A"],
      ["_dmarc.lx.com", "TXT"],
      ["_imaps._tcp.lx.com", "SRV"],
      ["sel._domainkey.lx.com", "TXT"],
      ["www.lx.com", "A"],
      ["out.lx.com", "A"],
      ["x.wild.lx.com", "A"],
      ["x.wild.lx.com", "MX"],
      ["host.sub.lx.com", "A"],
      ["1.0.0.127.in-addr.arpa", "PTR"],
      ["9.0.0.127.in-addr.arpa", "PTR"],
      ["example.org", "A"],
      ["mail.lx.com", "AAAA"],
      ["lx.com", "DS"],
      ["lx.com", "ANY", "+tcp"],
      ["mail.lx.com", "ANY", "+tcp"],
      ["big.lx.com", "TXT", "+bufsize=512", "+notcp", "+ignore"],
      // (Without EDNS BIND fills a truncated answer with the records that fit; we send it empty,
      // as BIND itself does for EDNS clients. Both are allowed (RFC 2181 §9); not compared.)
      ["big.lx.com", "TXT", "+tcp"],
    ];
    const norm = (r: DigResult) => ({
      status: r.status,
      aa: r.flags.includes("aa"),
      tc: r.flags.includes("tc"),
      answer: r.answer.map((a) => `${a.name.toLowerCase()} ${a.ttl} ${a.type} ${a.data}`).sort(),
      authority: r.authority.map((a) => `${a.name.toLowerCase()} ${a.ttl} ${a.type} ${a.data}`).sort(),
      additional: r.additional.map((a) => `${a.name.toLowerCase()} ${a.ttl} ${a.type} ${a.data}`).sort(),
    });
    const diffs: string[] = [];
    for (const args of queries) {
      const ours = norm(await dig(s.listeners[0]!.port, [...args, "+norec"]));
      const bind = norm(await dig(primary.port, [...args, "+norec"]));
      if (JSON.stringify(ours) !== JSON.stringify(bind))
        diffs.push(`${args.join(" ")}:\n  ours ${JSON.stringify(ours)}\n  BIND ${JSON.stringify(bind)}`);
    }

    expect(diffs.join("\n")).toBe("");
  } finally {
    await primary.stop();
    await s.close();
  }
});
