/**
 * A private BIND instance (Debian's bind9) for the benchmark: `named -g -c FILE -p PORT`,
 * authoritative only (recursion off), loopback only, serving the zones mailstack builds from the
 * same stack config (dns/zone.ts `buildZones` + `renderZone`, the BIND master-file rendering).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, promises as fs, openSync } from "node:fs";
import * as path from "node:path";
import { processTree } from "../lib/procmem";
import { waitUntil } from "../lib/util";
import { stopChild } from "./daemon";
import { gidOf, uidOf } from "./postfix";

export interface ZoneFile {
  origin: string;
  text: string;
}

export class BindInstance {
  private child: ChildProcess | null = null;
  readonly confFile: string;
  readonly logFile: string;

  constructor(
    readonly root: string,
    readonly port: number,
    readonly zones: ZoneFile[],
  ) {
    this.confFile = path.join(root, "named.conf");
    this.logFile = path.join(root, "named.log");
  }

  config(): string {
    const zones = this.zones
      .map((z) => `zone "${z.origin}" { type primary; file "${path.join(this.root, `${z.origin}.zone`)}"; notify no; };`)
      .join("\n");
    return `// mailstack benchmark: private authoritative BIND instance (generated)
options {
  directory "${this.root}";
  pid-file "${path.join(this.root, "named.pid")}";
  session-keyfile "${path.join(this.root, "session.key")}";
  listen-on port ${this.port} { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  allow-query { any; };
  allow-transfer { none; };
  dnssec-validation no;
  notify no;
  // The same answers mailstack gives (no NS/glue added to positive answers), so both servers
  // do the same work per query. BIND's default adds the NS RRset in the authority section.
  minimal-responses yes;
};
controls { };
${zones}
`;
  }

  async start(): Promise<void> {
    await fs.mkdir(this.root, { recursive: true });
    for (const z of this.zones) await fs.writeFile(path.join(this.root, `${z.origin}.zone`), z.text);
    await fs.writeFile(this.confFile, this.config());
    // named runs as the bind user (-u bind) and writes its pid and session key here.
    const bind = await uidOf("bind");
    await fs.chown(this.root, bind, await gidOf("bind"));
    const fd = openSync(this.logFile, "a");
    // -g: foreground, log to stderr; -u: drop to the bind user as the Debian service does.
    this.child = spawn("named", ["-g", "-c", this.confFile, "-p", String(this.port), "-u", "bind"], { stdio: ["ignore", fd, fd] });
    closeSync(fd);
    await waitUntil(
      async () => {
        if (this.child?.exitCode !== null) throw new Error(`named exited: ${(await fs.readFile(this.logFile, "utf8")).slice(-2000)}`);
        return (await fs.readFile(this.logFile, "utf8")).includes("running");
      },
      "named to start",
      30_000,
      100,
    );
  }

  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  pids(): number[] {
    return this.child?.pid && this.child.exitCode === null ? processTree(this.child.pid) : [];
  }

  async stop(): Promise<void> {
    await stopChild(this.child, 10_000);
  }
}
