/**
 * MAIL FROM / RCPT TO argument parsing (RFC 5321 §4.1.2, §4.1.1.2-3; RFC 6531 for UTF-8).
 *
 * The parser keeps what a relay trick hides in view instead of guessing: `user@other@lx.com`
 * becomes local part `user@other` at `lx.com` (split at the last `@`), `"user@other"@lx.com`
 * becomes local part `user@other` (quoted), and a source route `@lx.com:user@other` is dropped
 * as RFC 5321 §4.1.1.3 says (leaving `user@other`), with `sourceRoute` set. Routing policy
 * (smtp/policy.ts) decides what each of these may do.
 */
import { isIP } from "node:net";
import { SmtpError } from "./reply";

export interface Mailbox {
  /** Local part, unquoted (`"a b"` → `a b`). */
  local: string;
  /** Domain, lower-cased, without a trailing dot; an address literal keeps its brackets. */
  domain: string;
  /** The local part was a quoted string. */
  quoted: boolean;
  /** A source route (`@a,@b:`) was given and dropped. */
  sourceRoute: boolean;
  /** For an address literal: the IP address inside it. */
  literal?: string;
  /** Any non-ASCII character (needs SMTPUTF8). */
  utf8: boolean;
}

export type Params = Map<string, string | true>;

export interface PathArg {
  /** null for the null reverse-path `<>`. */
  mailbox: Mailbox | null;
  params: Params;
  /** The path as the client wrote it (for logs). */
  raw: string;
}

const CONTROL = /[\x00-\x1f\x7f]/;
// atext (RFC 5322 §3.2.3) plus "." (dot-string). `@` and `%`, `!` are kept visible for policy.
const DOT_STRING = /^[a-z0-9!#$%&'*+/=?^_`{|}~.@-]+$/i;
const LABEL = /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?|xn--[a-z0-9-]{1,59})$/i;

/**
 * Parses `FROM:<path> params` (or `TO:`) as it follows the verb. `keyword` is `FROM` or `TO`.
 * Throws SmtpError 501 with a precise reason on bad syntax.
 */
export function parsePathArg(arg: string, keyword: "FROM" | "TO"): PathArg {
  const kind = keyword === "FROM" ? "sender" : "recipient";
  const m = new RegExp(`^${keyword}:\\s*`, "i").exec(arg);
  if (!m) throw new SmtpError(501, "5.5.4", `Syntax: ${keyword === "FROM" ? "MAIL FROM:<address>" : "RCPT TO:<address>"}`);
  const rest = arg.slice(m[0].length);
  let raw: string;
  let after: string;
  if (rest.startsWith("<")) {
    const close = findClosingBracket(rest);
    if (close < 0) throw new SmtpError(501, "5.1.7", `Bad ${kind} address syntax`);
    raw = rest.slice(1, close);
    after = rest.slice(close + 1);
  } else {
    // Postfix accepts a path without angle brackets (strict_rfc821_envelopes = no).
    const sp = rest.indexOf(" ");
    raw = sp < 0 ? rest : rest.slice(0, sp);
    after = sp < 0 ? "" : rest.slice(sp);
    if (raw === "") throw new SmtpError(501, "5.1.7", `Bad ${kind} address syntax`);
  }
  if (after !== "" && !after.startsWith(" ")) throw new SmtpError(501, "5.5.4", "Syntax error in parameters");
  const params = parseParams(after.trim());
  if (raw === "") return { mailbox: null, params, raw };
  const mailbox = parseMailbox(raw);
  if (!mailbox) throw new SmtpError(501, keyword === "FROM" ? "5.1.7" : "5.1.3", `Bad ${kind} address syntax`);
  return { mailbox, params, raw };
}

function findClosingBracket(s: string): number {
  let quoted = false;
  for (let i = 1; i < s.length; i++) {
    const c = s[i];
    if (quoted && c === "\\") i++;
    else if (c === '"') quoted = !quoted;
    else if (c === ">" && !quoted) return i;
  }
  return -1;
}

/** ESMTP parameters `KEY=VALUE KEY` (RFC 5321 §4.1.2 esmtp-param). Keys upper-cased. */
export function parseParams(text: string): Params {
  const params: Params = new Map();
  if (text === "") return params;
  for (const item of text.split(/ +/)) {
    const eq = item.indexOf("=");
    const key = (eq < 0 ? item : item.slice(0, eq)).toUpperCase();
    if (!/^[A-Z0-9][A-Z0-9-]*$/.test(key)) throw new SmtpError(501, "5.5.4", "Syntax error in parameters");
    if (params.has(key)) throw new SmtpError(501, "5.5.4", `Duplicate parameter ${key}`);
    const value = eq < 0 ? true : item.slice(eq + 1);
    if (value !== true && (value === "" || CONTROL.test(value))) throw new SmtpError(501, "5.5.4", `Bad value for ${key}`);
    params.set(key, value);
  }
  return params;
}

/** Parses a mailbox (with optional source route). Null when it is not an address at all. */
export function parseMailbox(path: string): Mailbox | null {
  if (CONTROL.test(path) || path.length > 1024) return null;
  let sourceRoute = false;
  let s = path;
  if (s.startsWith("@")) {
    // A-d-l ":" Mailbox. The route is ignored (RFC 5321 §4.1.1.3, Appendix C).
    const colon = s.indexOf(":");
    if (colon < 0) return null;
    const route = s.slice(0, colon).split(",");
    if (!route.every((r) => r.startsWith("@") && isDomain(r.slice(1).toLowerCase()))) return null;
    s = s.slice(colon + 1);
    sourceRoute = true;
  }
  let local: string;
  let domainPart: string;
  let quoted = false;
  if (s.startsWith('"')) {
    let i = 1;
    let out = "";
    for (; i < s.length; i++) {
      const c = s[i]!;
      if (c === "\\") {
        if (i + 1 >= s.length) return null;
        out += s[++i];
      } else if (c === '"') break;
      else out += c;
    }
    if (i >= s.length || s[i + 1] !== "@") return null;
    local = out;
    domainPart = s.slice(i + 2);
    quoted = true;
  } else {
    const at = s.lastIndexOf("@");
    if (at <= 0) return null;
    local = s.slice(0, at);
    domainPart = s.slice(at + 1);
    if (/[\s"\\<>(),;:[\]]/.test(local)) return null;
    if (!DOT_STRING.test(local) && !/[^\x00-\x7f]/.test(local)) return null;
  }
  if (local === "") return null;
  let domain = domainPart.toLowerCase();
  let literal: string | undefined;
  if (domain.startsWith("[")) {
    if (!domain.endsWith("]")) return null;
    const inner = domain.slice(1, -1);
    const ip = inner.startsWith("ipv6:") ? inner.slice(5) : inner;
    const family = isIP(ip);
    if (family === 0 || (family === 6) !== inner.startsWith("ipv6:")) return null;
    literal = ip;
  } else {
    domain = domain.replace(/\.$/, "");
    if (!isDomain(domain)) return null;
  }
  const mailbox: Mailbox = { local, domain, quoted, sourceRoute, utf8: /[^\x00-\x7f]/.test(local + domain) };
  if (literal !== undefined) mailbox.literal = literal;
  return mailbox;
}

/** A host name: LDH labels (or UTF-8 labels, for SMTPUTF8), at least one. */
export function isDomain(d: string): boolean {
  if (d.length === 0 || d.length > 253) return false;
  return d.split(".").every((l) => LABEL.test(l) || (/[^\x00-\x7f]/.test(l) && !/[\s@"<>[\]\\,;:]/.test(l) && l.length <= 63));
}

/** The address as text: `local@domain`, the local part quoted when it is not a dot-string. */
export function formatMailbox(m: Mailbox): string {
  const plain = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/i.test(m.local) || /[^\x00-\x7f]/.test(m.local);
  const local = plain && !/[\s"\\]/.test(m.local) ? m.local : `"${m.local.replace(/(["\\])/g, "\\$1")}"`;
  return `${local}@${m.domain}`;
}
