/**
 * Pure tests of the zone builder, the master-file renderer (checked by BIND's own
 * named-checkzone), and SOA serial bookkeeping.
 */
import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import fc from "fast-check";
import { ConfigError, type MailConfig } from "../config/schema";
import { reverseName, reverseZoneName } from "../dns/names";
import { assignSerials, nextSerial, readSerials, serialFile } from "../dns/serial";
import { buildZones, parseTxt, renderZone, soaOf, splitTxt, type Zone, type ZoneRecord, zoneHash } from "../dns/zone";
import { devConfig, tempDir } from "./dns/helpers";

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const data = path.join(tmp.dir, "data");

function rec(zone: Zone, name: string, type: string): ZoneRecord[] {
  return zone.records.filter((r) => r.name === name && r.type === type);
}

describe("buildZones from the dev stack", () => {
  const config = devConfig(data);
  const zones = buildZones(config);
  const fwd = zones[0]!;
  const rev = zones[1]!;

  test("a forward and a reverse zone, each starting with its SOA", () => {
    expect(zones.map((z) => [z.origin, z.kind])).toEqual([
      ["lx.com", "forward"],
      ["0.0.127.in-addr.arpa", "reverse"],
    ]);
    for (const z of zones) expect(z.records[0]!.type).toBe("SOA");
    expect(soaOf(fwd).data).toMatchObject({ mname: "ns1.lx.com", rname: "hostmaster.lx.com", serial: 1 });
  });

  test("NS, glue, MX, A, SPF and DMARC follow the config", () => {
    expect(rec(fwd, "lx.com", "NS").map((r) => r.data)).toEqual(["ns1.lx.com"]);
    expect(rec(fwd, "ns1.lx.com", "A").map((r) => r.data)).toEqual([config.publicAddress]);
    expect(rec(fwd, "lx.com", "MX").map((r) => r.data)).toEqual([{ preference: 10, exchange: "mail.lx.com" }]);
    expect(rec(fwd, "mail.lx.com", "A").map((r) => r.data)).toEqual(["127.0.0.1"]);
    expect(rec(fwd, "lx.com", "TXT").map((r) => r.data)).toEqual([["v=spf1 mx -all"]]);
    expect(rec(fwd, "_dmarc.lx.com", "TXT").map((r) => r.data)).toEqual([["v=DMARC1; p=quarantine"]]);
  });

  test("RFC 6186 SRV records carry the standard public ports, not the dev listen ports", () => {
    const srv = (s: string) => rec(fwd, `${s}.lx.com`, "SRV").map((r) => r.data);
    expect(srv("_submission._tcp")).toEqual([{ priority: 0, weight: 1, port: 587, target: "mail.lx.com" }]);
    expect(srv("_imap._tcp")).toEqual([{ priority: 0, weight: 1, port: 143, target: "mail.lx.com" }]);
    expect(srv("_imaps._tcp")).toEqual([{ priority: 0, weight: 1, port: 993, target: "mail.lx.com" }]);
    expect(srv("_pop3._tcp")).toEqual([{ priority: 0, weight: 1, port: 110, target: "mail.lx.com" }]);
    expect(srv("_pop3s._tcp")).toEqual([{ priority: 0, weight: 1, port: 995, target: "mail.lx.com" }]);
    expect(config.listen.submission!.port).not.toBe(587);
  });

  test("a listener switched off is published as not offered (RFC 6186 §4)", () => {
    const c = devConfig(data, { listen: { pop3: false } });
    const z = buildZones(c)[0]!;
    expect(rec(z, "_pop3._tcp.lx.com", "SRV").map((r) => r.data)).toEqual([{ priority: 0, weight: 0, port: 0, target: "" }]);
  });

  test("the reverse zone has the PTR for publicAddress", () => {
    expect(rec(rev, "1.0.0.127.in-addr.arpa", "PTR").map((r) => r.data)).toEqual(["mail.lx.com"]);
    expect(rec(rev, "0.0.127.in-addr.arpa", "NS").map((r) => r.data)).toEqual(["ns1.lx.com"]);
  });

  test("mxPreference, dmarcPolicy, spf and ttl are taken from the config", () => {
    const c = devConfig(data, { dns: { mxPreference: 20, dmarcPolicy: "reject", spf: "v=spf1 a mx ~all", ttl: 600 } });
    const z = buildZones(c)[0]!;
    expect(rec(z, "lx.com", "MX")[0]).toMatchObject({ ttl: 600, data: { preference: 20 } });
    expect(rec(z, "_dmarc.lx.com", "TXT")[0]!.data).toEqual(["v=DMARC1; p=reject"]);
    expect(rec(z, "lx.com", "TXT")[0]!.data).toEqual(["v=spf1 a mx ~all"]);
    expect(soaOf(z).data.minimum).toBe(300);
  });
});

describe("extra records (dns.records)", () => {
  test("relative, @ and absolute owners; every type parses", () => {
    const c = devConfig(data, {
      dns: {
        records: [
          { name: "www", type: "CNAME", value: "mail.lx.com" },
          { name: "@", type: "MX", value: "20 backup.example.net." },
          { name: "backup.lx.com.", type: "AAAA", value: "2001:DB8::1" },
          { name: "_xmpp._tcp", type: "SRV", value: "5 0 5269 mail.lx.com", ttl: 60 },
          { name: "sel._domainkey", type: "TXT", value: `v=DKIM1; k=rsa; p=${"A".repeat(400)}` },
          { name: "q", type: "TXT", value: '"a \\"quoted\\" part" "second"' },
          { name: "@", type: "CAA", value: '0 issue "letsencrypt.org"' },
          { name: "*.wild", type: "A", value: "192.0.2.7" },
          { name: "2.0.0.127.in-addr.arpa", type: "PTR", value: "other.lx.com" },
          { name: "sub", type: "NS", value: "ns.sub.lx.com" },
        ],
      },
    });
    const [fwd, rev] = buildZones(c) as [Zone, Zone];
    expect(rec(fwd, "www.lx.com", "CNAME")[0]!.data).toBe("mail.lx.com");
    expect(rec(fwd, "lx.com", "MX").map((r) => r.data)).toContainEqual({ preference: 20, exchange: "backup.example.net" });
    expect(rec(fwd, "backup.lx.com", "AAAA")[0]!.data).toBe("2001:db8::1");
    expect(rec(fwd, "_xmpp._tcp.lx.com", "SRV")[0]).toMatchObject({ ttl: 60, data: { port: 5269 } });
    const dkim = rec(fwd, "sel._domainkey.lx.com", "TXT")[0]!.data as string[];
    expect(dkim.length).toBe(2);
    expect(dkim.every((s) => Buffer.byteLength(s) <= 255)).toBe(true);
    expect(dkim.join("")).toBe(`v=DKIM1; k=rsa; p=${"A".repeat(400)}`);
    expect(rec(fwd, "q.lx.com", "TXT")[0]!.data).toEqual(['a "quoted" part', "second"]);
    expect(rec(fwd, "lx.com", "CAA")[0]!.data).toEqual({ flags: 0, tag: "issue", value: "letsencrypt.org" });
    expect(rec(fwd, "*.wild.lx.com", "A")).toHaveLength(1);
    expect(rec(rev, "2.0.0.127.in-addr.arpa", "PTR")[0]!.data).toBe("other.lx.com");
    expect(rec(fwd, "sub.lx.com", "NS")).toHaveLength(1);
  });

  test("bad records are reported with their key paths, all at once", () => {
    const c = devConfig(data, {
      dns: {
        records: [
          { name: "a", type: "A", value: "not-an-ip" },
          { name: "b", type: "MX", value: "mail.lx.com" },
          { name: "elsewhere.example.", type: "A", value: "192.0.2.1" },
          { name: "@", type: "CNAME", value: "x.lx.com" },
          { name: "mail", type: "CNAME", value: "x.lx.com" },
          { name: "bad name", type: "A", value: "192.0.2.1" },
        ],
      },
    });
    let err: unknown;
    try {
      buildZones(c);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const paths = (err as ConfigError).problems.map((p) => p.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        "mailstack:dns.records[0].value",
        "mailstack:dns.records[1].value",
        "mailstack:dns.records[2].name",
        "mailstack:dns.records[3].type",
        "mailstack:dns.records[4].name",
        "mailstack:dns.records[5].name",
      ]),
    );
    expect((err as ConfigError).message).toMatch(/mail\.lx\.com has a CNAME and also A/);
  });

  test("duplicates collapse and an RRset gets one TTL (the lowest)", () => {
    const c = devConfig(data, {
      dns: {
        records: [
          { name: "x", type: "A", value: "192.0.2.1", ttl: 100 },
          { name: "x", type: "A", value: "192.0.2.1", ttl: 100 },
          { name: "x", type: "A", value: "192.0.2.2", ttl: 50 },
        ],
      },
    });
    const xs = rec(buildZones(c)[0]!, "x.lx.com", "A");
    expect(xs.map((r) => [r.data, r.ttl])).toEqual([
      ["192.0.2.1", 50],
      ["192.0.2.2", 50],
    ]);
  });

  test("property: any set of valid A/TXT/MX records builds zones whose invariants hold", () => {
    const label = fc.stringMatching(/^[a-z][a-z0-9-]{0,10}[a-z0-9]$/);
    const record = fc.oneof(
      fc.record({ name: label, type: fc.constant("A" as const), value: fc.ipV4(), ttl: fc.integer({ min: 1, max: 86400 }) }),
      fc.record({
        name: label,
        type: fc.constant("TXT" as const),
        value: fc.string({ maxLength: 600 }).filter((s) => !s.trim().startsWith('"')),
        ttl: fc.integer({ min: 1, max: 86400 }),
      }),
      fc.record({
        name: label,
        type: fc.constant("MX" as const),
        value: fc.tuple(fc.integer({ min: 0, max: 65535 }), label).map(([p, h]) => `${p} ${h}.example.net`),
        ttl: fc.integer({ min: 1, max: 86400 }),
      }),
    );
    fc.assert(
      fc.property(fc.array(record, { maxLength: 12 }), (records) => {
        const zones = buildZones(devConfig(data, { dns: { records } }));
        for (const z of zones) {
          expect(z.records[0]!.type).toBe("SOA");
          expect(z.records.filter((r) => r.type === "SOA")).toHaveLength(1);
          const keys = z.records.map((r) => `${r.name} ${r.type} ${JSON.stringify(r.data)}`);
          expect(new Set(keys).size).toBe(keys.length);
          const ttl = new Map<string, number>();
          for (const r of z.records) {
            expect(r.name === z.origin || r.name.endsWith(`.${z.origin}`)).toBe(true);
            const k = `${r.name} ${r.type}`;
            if (ttl.has(k)) expect(r.ttl).toBe(ttl.get(k));
            ttl.set(k, r.ttl);
            if (r.type === "TXT") for (const s of r.data) expect(Buffer.byteLength(s)).toBeLessThanOrEqual(255);
          }
        }
        // Pure: the same config gives the same zones.
        expect(buildZones(devConfig(data, { dns: { records } }))).toEqual(zones);
      }),
      { numRuns: 60 },
    );
  });
});

describe("names", () => {
  test("reverse names and zones for IPv4 and IPv6", () => {
    expect(reverseName("192.168.25.100")).toBe("100.25.168.192.in-addr.arpa");
    expect(reverseZoneName("192.168.25.0/24")).toBe("25.168.192.in-addr.arpa");
    expect(reverseZoneName("10.0.0.0/8")).toBe("10.in-addr.arpa");
    expect(reverseZoneName("192.168.25.128/25")).toBe("25.168.192.in-addr.arpa");
    expect(reverseName("2001:db8::1")).toBe(`1.${"0.".repeat(23)}8.b.d.0.1.0.0.2.ip6.arpa`);
    expect(reverseZoneName("2001:db8::/32")).toBe("8.b.d.0.1.0.0.2.ip6.arpa");
  });

  test("publicAddress6 gets its own /64 reverse zone and an AAAA", () => {
    const c = devConfig(data, { publicAddress6: "2001:db8:1:2::25" });
    const zones = buildZones(c);
    expect(zones.map((z) => z.origin)).toContain(reverseZoneName("2001:db8:1:2::/64"));
    const z6 = zones.find((z) => z.origin.endsWith("ip6.arpa"))!;
    expect(rec(z6, reverseName("2001:db8:1:2::25"), "PTR")[0]!.data).toBe("mail.lx.com");
    expect(rec(zones[0]!, "mail.lx.com", "AAAA")[0]!.data).toBe("2001:db8:1:2::25");
  });

  test("TXT splitting never cuts a character and keeps the text", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", maxLength: 700 }), (s) => {
        const parts = splitTxt(s);
        expect(parts.join("")).toBe(s);
        for (const p of parts) expect(Buffer.byteLength(p)).toBeLessThanOrEqual(255);
      }),
    );
    expect(parseTxt('"a" "b c"')).toEqual(["a", "b c"]);
  });
});

describe("master-file rendering", () => {
  function checkzone(origin: string, file: string): Promise<{ code: number; out: string }> {
    return new Promise((resolve) =>
      execFile("named-checkzone", ["-i", "full", "-D", "-o", "-", origin, file], (err, stdout, stderr) =>
        resolve({ code: err ? Number(err.code ?? 1) : 0, out: stdout + stderr }),
      ),
    );
  }

  test("BIND's named-checkzone loads every rendered zone, with the same record count", async () => {
    const c = devConfig(data, {
      publicAddress6: "2001:db8::25",
      dns: {
        records: [
          { name: "www", type: "CNAME", value: "mail.lx.com" },
          { name: "q", type: "TXT", value: 'has "quotes" and \\ backslash and ünïcode' },
          { name: "@", type: "CAA", value: '0 issue "letsencrypt.org"' },
          { name: "sel._domainkey", type: "TXT", value: "p=".padEnd(300, "x") },
        ],
      },
    });
    for (const z of buildZones(c, { "lx.com": 2026010101 })) {
      const file = path.join(tmp.dir, `${z.origin}.zone`);
      writeFileSync(file, renderZone(z));
      const r = await checkzone(z.origin, file);
      expect(r.out).toMatch(/OK/);
      expect(r.code).toBe(0);
      if (z.origin === "lx.com") expect(r.out).toContain("loaded serial 2026010101");
      // The canonical dump BIND writes back has exactly our records.
      const dumped = r.out.split("\n").filter((l) => /\sIN\s/.test(l));
      expect(dumped).toHaveLength(z.records.length);
    }
    const text = readFileSync(path.join(tmp.dir, "lx.com.zone"), "utf8");
    expect(text).toContain('q.lx.com.\t3600\tIN\tTXT\t"has \\"quotes\\" and \\\\ backslash and \\195\\188n\\195\\175code"');
    expect(text).toContain("lx.com.\t3600\tIN\tMX\t10 mail.lx.com.");
  });
});

describe("SOA serials", () => {
  test("nextSerial: today's YYYYMMDD00 first, then strictly increasing", () => {
    const d = new Date(Date.UTC(2026, 2, 4, 12));
    expect(nextSerial(undefined, d)).toBe(2026030400);
    expect(nextSerial(2026030400, d)).toBe(2026030401);
    expect(nextSerial(2026030399, d)).toBe(2026030400);
    expect(nextSerial(2025010105, d)).toBe(2026030400);
    expect(nextSerial(2026030499, d)).toBe(2026030500); // 100 changes in a day: still larger
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 4_000_000_000 }),
        fc.date({ min: new Date(2000, 0, 1), max: new Date(2100, 0, 1), noInvalidDate: true }),
        (prev, now) => {
          expect(nextSerial(prev, now)).toBeGreaterThan(prev);
        },
      ),
    );
  });

  test("persisted: same content keeps its serial, a change bumps it, in <dataDir>/dns/", async () => {
    const dir = path.join(tmp.dir, "serials");
    const day1 = new Date(Date.UTC(2026, 0, 10));
    const c1 = devConfig(dir);
    const a = await assignSerials(dir, buildZones(c1), day1);
    expect(a.changed).toEqual(["lx.com", "0.0.127.in-addr.arpa"]);
    expect(soaOf(a.zones[0]!).data.serial).toBe(2026011000);
    expect(serialFile(dir)).toBe(path.join(dir, "dns", "serials.json"));

    const b = await assignSerials(dir, buildZones(c1), new Date(Date.UTC(2026, 0, 11)));
    expect(b.changed).toEqual([]);
    expect(soaOf(b.zones[0]!).data.serial).toBe(2026011000);

    const c2 = devConfig(dir, { dns: { records: [{ name: "new", type: "A", value: "192.0.2.9" }] } });
    const c = await assignSerials(dir, buildZones(c2), day1);
    expect(c.changed).toEqual(["lx.com"]);
    expect(soaOf(c.zones[0]!).data.serial).toBe(2026011001);
    expect(soaOf(c.zones[1]!).data.serial).toBe(2026011000);
    expect((await readSerials(dir))["lx.com"]!.hash).toBe(zoneHash(c.zones[0]!));
  });

  test("zoneHash ignores the serial and record order, and sees any other change", () => {
    const z = buildZones(devConfig(data))[0]!;
    const moved: Zone = { ...z, records: [z.records[0]!, ...z.records.slice(1).reverse()] };
    expect(zoneHash(moved)).toBe(zoneHash(z));
    expect(zoneHash(buildZones(devConfig(data), { "lx.com": 99 })[0]!)).toBe(zoneHash(z));
    const c: MailConfig = devConfig(data, { dns: { mxPreference: 11 } });
    expect(zoneHash(buildZones(c)[0]!)).not.toBe(zoneHash(z));
  });
});
