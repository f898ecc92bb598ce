/**
 * Starting and stopping reference servers by PID: a forking daemon found through its master's
 * PID file (Postfix, Dovecot) or a foreground child process (named, smtp-sink). Only processes
 * the harness started are signalled.
 */
import type { ChildProcess } from "node:child_process";
import { promises as fs, readFileSync } from "node:fs";
import { processTree } from "../lib/procmem";
import { sleep, waitUntil, within } from "../lib/util";

export function alive(pid: number): boolean {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

export function safeKill(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** A daemon that forks into the background and writes its master's PID to a file. */
export abstract class MasterDaemon {
  protected constructor(
    private readonly pidFile: string,
    private readonly what: string,
  ) {}

  async masterPid(): Promise<number | null> {
    const t = await fs.readFile(this.pidFile, "utf8").catch(() => "");
    const pid = Number(t.trim());
    return pid > 0 ? pid : null;
  }

  /** Master and all its children (for memory). */
  async pids(): Promise<number[]> {
    const pid = await this.masterPid();
    return pid ? processTree(pid) : [];
  }

  /** Stops the master by its PID (SIGTERM: it stops its children), and waits until all are gone. */
  async stop(): Promise<void> {
    const pid = await this.masterPid();
    if (!pid) return;
    const tree = processTree(pid);
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      return;
    }
    await waitUntil(() => tree.every((p) => !alive(p)), `${this.what} to stop`, 15_000, 100).catch(async () => {
      for (const p of tree) if (alive(p)) safeKill(p, "SIGKILL");
      await sleep(200);
    });
  }
}

/** Stops a child process: SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
export async function stopChild(c: ChildProcess | null, graceMs: number): Promise<void> {
  if (!c || c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise<void>((r) => c.once("exit", () => r()));
  c.kill("SIGTERM");
  if (!(await within(exited, graceMs))) {
    c.kill("SIGKILL");
    await exited;
  }
}
