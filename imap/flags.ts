/** Flag arguments (RFC 3501 §9 flag / flag-list): system flags in canonical case, keywords as atoms. */
import { bad } from "./command";
import type { Token } from "./parser";

const SYSTEM = new Map(["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"].map((f) => [f.toLowerCase(), f]));
/** ATOM-CHAR without atom-specials (RFC 3501 §9); keywords are atoms. */
const KEYWORD_RE = /^[\x21\x23-\x24\x26-\x27\x2b-\x5a\x5e-\x7a\x7c\x7e]+$/;

/** Parses flags. `\Recent` is refused (it cannot be stored, RFC 3501 §2.3.2). */
export function parseFlags(tokens: Token[]): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const t of tokens) {
    if (t.type !== "atom" || t.section) throw bad("Invalid flag");
    const v = t.value;
    let flag: string;
    if (v.startsWith("\\")) {
      const sys = SYSTEM.get(v.toLowerCase());
      if (!sys) throw bad(`Invalid system flag ${v.slice(0, 30)}`);
      flag = sys;
    } else {
      if (!KEYWORD_RE.test(v) || v.length > 100) throw bad(`Invalid keyword ${v.slice(0, 30)}`);
      flag = v;
    }
    if (!seen.has(flag.toLowerCase())) {
      seen.add(flag.toLowerCase());
      out.push(flag);
    }
  }
  return out;
}
