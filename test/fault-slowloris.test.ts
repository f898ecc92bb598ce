/**
 * Slowloris: 1,000 connections to each service (SMTP, POP3, IMAP, DNS over TCP) that each send
 * a fragment of a command and then nothing. The service's memory stays bounded (under 64 KiB
 * per idle connection) and a new client is still served completely. The per-client
 * connection limit is raised in this test's config, so the 1,000 connections from 127.0.0.1 are
 * all let in and the test measures the cost of holding them.
 */
import { connect, type Socket } from "node:net";
import { faultArea, hasService, makeMessage, rssOf, type ServiceName, sendMail, sleep, waitFor } from "./fault-helpers";
import { type Probe, probeDns, probeImap, probePop3, probeSmtp } from "./fault-probe";

const CONNECTIONS = 1000;
/** What a slow client sends and then never finishes. */
const FRAGMENTS: Record<string, Buffer> = {
  smtp: Buffer.from("EHLO slow"),
  pop3: Buffer.from("USER l"),
  imap: Buffer.from("a1 LOGIN lx"),
  dns: Buffer.from([0x00]),
};

interface Case {
  service: ServiceName;
  endpoint: "smtp" | "pop3" | "imap" | "dns";
  probe: Probe;
}

const CASES: Case[] = [
  { service: "smtp", endpoint: "smtp", probe: probeSmtp },
  { service: "pop3", endpoint: "pop3", probe: probePop3 },
  { service: "imap", endpoint: "imap", probe: probeImap },
  { service: "dns", endpoint: "dns", probe: probeDns },
];

let sockets: Socket[] = [];

// The slow clients go before the service is stopped (declared first, so this runs first).
afterEach(() => {
  for (const s of sockets) s.destroy();
  sockets = [];
});
const area = faultArea("fault-slowloris");

async function openSlow(port: number, fragment: Buffer): Promise<{ open: number; refused: number }> {
  let refused = 0;
  const batch = 100;
  for (let i = 0; i < CONNECTIONS; i += batch) {
    await Promise.all(
      Array.from(
        { length: Math.min(batch, CONNECTIONS - i) },
        () =>
          new Promise<void>((resolve) => {
            const s = connect({ port, host: "127.0.0.1" });
            s.on("error", () => undefined);
            s.once("connect", () => {
              sockets.push(s);
              s.write(fragment);
              resolve();
            });
            s.once("close", () => resolve());
            s.once("error", () => {
              refused++;
              resolve();
            });
          }),
      ),
    );
  }
  return { open: sockets.filter((s) => !s.destroyed).length, refused };
}

describe.each(CASES)("slowloris: 1,000 idle connections to $service", ({ service, endpoint, probe }) => {
  const run = hasService(service) ? test : test.skip;
  run("memory stays bounded and a new client is still served", async () => {
    const { file: cfg } = await area.config(
      { listen: { [endpoint]: 0 }, extra: { limits: { connectionsPerClient: 5000, maxConnections: 5000, authFailureDelay: 0 } } },
      service,
    );
    const svc = await area.start(service, cfg, service);
    const port = svc.port(endpoint);
    if (service === "smtp") await sendMail(port, ["lx@lx.com"], makeMessage("seed", 1000));
    // Warm up the code paths the probe uses before the baseline.
    await probe(port);
    await sleep(200);
    const before = rssOf(svc.pid);

    const { open } = await openSlow(port, FRAGMENTS[endpoint]!);
    await sleep(1000);
    // A new client gets a complete, correct exchange while the slow ones hang on.
    await probe(port);
    const after = rssOf(svc.pid);
    const still = sockets.filter((s) => !s.destroyed).length;
    expect(svc.alive).toBe(true);
    const grewKiB = Math.round((after - before) / 1024);
    // Bounded: under 64 KiB per slow connection on average (the process itself runs under
    // ts-node here, whose compiler dominates the baseline; only the growth is judged).
    expect({ service, grewKiB, under: grewKiB < CONNECTIONS * 64 }).toEqual({ service, grewKiB, under: true });
    // Record what the server did with them (kept or cut), for the log.
    process.stdout.write(
      `slowloris ${service}: ${open} opened, ${still} still open after 1 s, RSS ${Math.round(before / 1048576)} → ${Math.round(after / 1048576)} MiB\n`,
    );

    for (const s of sockets) s.destroy();
    sockets = [];
    await waitFor(async () => {
      await probe(port);
      return true;
    }, `${service} to serve after the slow clients left`);
  });
});
