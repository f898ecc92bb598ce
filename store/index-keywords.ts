/**
 * Dovecot's `dovecot-keywords`: maps the Maildir info letters `a`–`z` to IMAP keywords, one
 * `<index> <keyword>` line per keyword (index 0 = `a`). At most 26 keywords per folder, as in
 * Dovecot; keywords beyond that are dropped (the IMAP layer should not advertise more via
 * PERMANENTFLAGS once `full` is true). New keywords are added under the `dovecot-keywords.lock`
 * dotlock and written atomically.
 */
import { randomBytes } from "node:crypto";
import { promises as fs, statSync } from "node:fs";
import * as path from "node:path";
import { withDotlock } from "./lock";

export const KEYWORDS_FILE = "dovecot-keywords";
const MAX = 26;

export class Keywords {
  readonly file: string;
  private names: (string | undefined)[] = [];
  private byLower = new Map<string, number>();
  private mtimeNs = -1n;
  private size = -1;
  /** Goes up whenever the letter → keyword map may have changed (for callers that memoise on it). */
  version = 0;

  constructor(dir: string) {
    this.file = path.join(dir, KEYWORDS_FILE);
  }

  get full(): boolean {
    return this.names.filter((n) => n !== undefined).length >= MAX;
  }

  async refresh(): Promise<void> {
    let st: import("node:fs").BigIntStats;
    try {
      // Synchronous: a stat is a few µs, a thread-pool round trip more (this runs per change).
      st = statSync(this.file, { bigint: true });
    } catch {
      if (this.mtimeNs !== -1n || this.names.length > 0) this.version++;
      this.names = [];
      this.byLower = new Map();
      this.mtimeNs = -1n;
      return;
    }
    if (st.mtimeNs === this.mtimeNs && Number(st.size) === this.size) return;
    const text = await fs.readFile(this.file, "utf8").catch(() => "");
    const names: (string | undefined)[] = [];
    const byLower = new Map<string, number>();
    for (const line of text.split("\n")) {
      const m = /^(\d+) (.+)$/.exec(line.trim());
      if (!m) continue;
      const i = Number(m[1]);
      if (i >= MAX || byLower.has(m[2]!.toLowerCase())) continue;
      names[i] = m[2]!;
      byLower.set(m[2]!.toLowerCase(), i);
    }
    this.names = names;
    this.byLower = byLower;
    this.mtimeNs = st.mtimeNs;
    this.size = Number(st.size);
    this.version++;
  }

  /** IMAP keyword for an info letter a–z, if known. */
  keywordOf(letter: string): string | undefined {
    return this.names[letter.charCodeAt(0) - 97];
  }

  /** The letter of a known keyword. */
  letterOf(keyword: string): string | undefined {
    const i = this.byLower.get(keyword.toLowerCase());
    return i === undefined ? undefined : String.fromCharCode(97 + i);
  }

  /** Makes sure these keywords have letters (adding them to the file). Returns the letters known. */
  async ensure(keywords: readonly string[]): Promise<Map<string, string>> {
    await this.refresh();
    const missing = keywords.filter((k) => this.letterOf(k) === undefined);
    if (missing.length > 0 && !this.full) {
      await withDotlock(this.file, async () => {
        this.mtimeNs = -1n;
        await this.refresh();
        let changed = false;
        for (const k of missing) {
          if (this.letterOf(k) !== undefined) continue;
          let i = 0;
          while (i < MAX && this.names[i] !== undefined) i++;
          if (i >= MAX) break;
          this.names[i] = k;
          this.byLower.set(k.toLowerCase(), i);
          this.version++;
          changed = true;
        }
        if (!changed) return;
        const lines = this.names.map((n, i) => (n === undefined ? "" : `${i} ${n}\n`)).join("");
        const tmp = `${this.file}.${randomBytes(4).toString("hex")}.tmp`;
        await fs.writeFile(tmp, lines, { mode: 0o600 });
        await fs.rename(tmp, this.file);
        const st = await fs.stat(this.file, { bigint: true });
        this.mtimeNs = st.mtimeNs;
        this.size = Number(st.size);
      });
    }
    const out = new Map<string, string>();
    for (const k of keywords) {
      const l = this.letterOf(k);
      if (l) out.set(k.toLowerCase(), l);
    }
    return out;
  }
}
