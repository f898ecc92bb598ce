/**
 * Local delivery: one message into several users' INBOXes, all or none. The message is written
 * and fsynced once, then hard-linked into each recipient's new/ and every new/ is fsynced.
 * Only then does the caller (SMTP) answer 250.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { asTemporary, ensureUserMaildir, syncDir, uniqueName, wireSize, writeTmp } from "./maildir";
import type { Delivery } from "./types";

export class MaildirDelivery implements Delivery {
  constructor(private readonly dataDir: string) {}

  async deliverLocal(users: string[], data: Buffer): Promise<string[]> {
    const unique = [...new Set(users)];
    if (unique.length === 0) return [];
    const roots = await Promise.all(unique.map((u) => ensureUserMaildir(this.dataDir, u)));
    const name = uniqueName(data.length, wireSize(data));
    const tmp = await writeTmp(roots[0]!, name, data);
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
