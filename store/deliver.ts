/**
 * Local delivery: one message into several users' INBOXes, all or none. The message is written
 * and fsynced once, then hard-linked into each recipient's new/ and every new/ is fsynced.
 * Only then does the caller (SMTP) answer 250.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { asTemporary, ensureUserMaildir, syncDir, uniqueName, wireSize, writeTmp } from "./maildir";
import type { Delivery } from "./types";

export class MaildirDelivery implements Delivery {
  constructor(private readonly dataDir: string) {}

  async deliverLocal(users: string[], data: Buffer, opts: { name?: string } = {}): Promise<string[]> {
    const unique = [...new Set(users)];
    if (unique.length === 0) return [];
    let roots = await Promise.all(unique.map((u) => ensureUserMaildir(this.dataDir, u)));
    const name = opts.name ? `${opts.name},S=${data.length},W=${wireSize(data)}` : uniqueName(data.length, wireSize(data));
    if (opts.name) {
      const present = await Promise.all(roots.map((r) => hasMessage(r, name)));
      roots = roots.filter((_, i) => !present[i]);
      if (roots.length === 0) return [];
    }
    // The temporary file's name is always fresh: a crash may have left one with `name` in tmp/.
    const tmp = await writeTmp(roots[0]!, opts.name ? `${name}.${randomBytes(4).toString("hex")}` : name, data);
    const placed: string[] = [];
    try {
      for (const root of roots) {
        const dest = path.join(root, "new", name);
        try {
          await fs.link(tmp, dest);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
          const copy = await writeTmp(root, name, data);
          await fs.rename(copy, dest);
        }
        placed.push(dest);
      }
      await Promise.all(roots.map((r) => syncDir(path.join(r, "new"))));
      return placed;
    } catch (err) {
      // Nothing may stay visible after a failure: remove every link we made.
      await Promise.all(placed.map((p) => fs.unlink(p).catch(() => undefined)));
      await Promise.all(roots.map((r) => syncDir(path.join(r, "new")).catch(() => undefined)));
      throw asTemporary(err);
    } finally {
      await fs.unlink(tmp).catch(() => undefined);
    }
  }
}

/** Whether a Maildir already holds the message `name`, unread in new/ or seen in cur/ (`name:2,…`). */
async function hasMessage(root: string, name: string): Promise<boolean> {
  try {
    await fs.access(path.join(root, "new", name));
    return true;
  } catch {
    // not in new/: look in cur/, where a client's first look moved it
  }
  const cur = await fs.readdir(path.join(root, "cur"));
  return cur.some((f) => f === name || f.startsWith(`${name}:`));
}
