/**
 * Postfix's `smtp-sink` as the next hop for the relay benchmark. `-c` prints a running counter
 * (`mesg=N` after each completed DATA), which is how delivered messages are counted.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, promises as fs, openSync } from "node:fs";
import { waitForPort } from "../lib/util";
import { stopChild } from "./daemon";

export class SmtpSink {
  private child: ChildProcess | null = null;

  constructor(
    readonly port: number,
    readonly outFile: string,
  ) {}

  async start(): Promise<void> {
    const fd = openSync(this.outFile, "w");
    // -u: smtp-sink refuses to run as root without a user to switch to.
    this.child = spawn("smtp-sink", ["-c", "-u", "nobody", `127.0.0.1:${this.port}`, "1024"], { stdio: ["ignore", fd, fd] });
    closeSync(fd);
    await waitForPort(this.port);
  }

  /** Messages received so far (the last `mesg=` in the counter output). */
  async count(): Promise<number> {
    const fh = await fs.open(this.outFile, "r");
    try {
      const { size } = await fh.stat();
      const len = Math.min(size, 512);
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, size - len);
      const all = [...buf.toString("latin1").matchAll(/mesg=(\d+)/g)];
      return all.length ? Number(all[all.length - 1]![1]) : 0;
    } finally {
      await fh.close();
    }
  }

  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  async stop(): Promise<void> {
    await stopChild(this.child, 5000);
  }
}
