/**
 * LIST (RFC 3501 §6.3.8) with LIST-EXTENDED (RFC 5258: selection options SUBSCRIBED,
 * RECURSIVEMATCH, REMOTE, SPECIAL-USE; return options SUBSCRIBED, CHILDREN, SPECIAL-USE and
 * STATUS from RFC 5819; several patterns), CHILDREN attributes (RFC 3348) and special-use
 * attributes (RFC 6154), which are always shown.
 */

import { decodeMutf7 } from "../../lib/mutf7";
import { AUTHENTICATED, bad, type CommandSpec } from "../command";
import { str, type Value } from "../compiler";
import { parents } from "../names";
import { isAtom, type Token, tokenBytes } from "../parser";
import type { Session } from "../session";
import { statusItems, statusValues } from "./status";

export interface ListEntry {
  name: string;
  exists: boolean;
  subscribed: boolean;
  specialUse?: string;
  hasChildren: boolean;
}

/** Every name with its attributes, including superiors that exist only as parents. */
export async function allMailboxes(s: Session): Promise<Map<string, ListEntry>> {
  const folders = await s.store.listFolders(s.user!);
  const map = new Map<string, ListEntry>();
  for (const f of folders) {
    const e: ListEntry = { name: f.name, exists: true, subscribed: f.subscribed, hasChildren: false };
    if (f.specialUse) e.specialUse = f.specialUse;
    map.set(f.name, e);
  }
  for (const f of folders) {
    for (const p of parents(f.name)) {
      const e = map.get(p);
      if (e) e.hasChildren = true;
      else map.set(p, { name: p, exists: false, subscribed: false, hasChildren: true });
    }
  }
  return map;
}

/** Subscribed names (which need not exist). */
export async function subscribedNames(_s: Session, all: Map<string, ListEntry>): Promise<Set<string>> {
  const subs = new Set<string>();
  for (const e of all.values()) if (e.subscribed) subs.add(e.name);
  return subs;
}

/** RFC 3501 §6.3.8 pattern matching: `*` matches anything, `%` anything but the separator. */
export function patternMatcher(pattern: string): (name: string) => boolean {
  let re = "";
  for (const ch of pattern) {
    if (ch === "*") re += ".*";
    else if (ch === "%") re += "[^/]*";
    else re += ch.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }
  const exact = new RegExp(`^${re}$`, "s");
  const ci = new RegExp(`^${re}$`, "is");
  return (name) => {
    if (exact.test(name)) return true;
    // INBOX is case-insensitive (RFC 3501 §5.1).
    return (name === "INBOX" || name.startsWith("INBOX/")) && ci.test(name);
  };
}

function decodePattern(s: Session, t: Token): string {
  const b = tokenBytes(t);
  if (b === null) throw bad("Invalid mailbox pattern");
  if (s.utf8) return b.toString("utf8");
  const d = decodeMutf7(b.toString("latin1"));
  return d ?? b.toString("latin1");
}

function attributes(e: ListEntry, opts: { subscribedAttr: boolean; extended: boolean }): string[] {
  const attrs: string[] = [];
  if (!e.exists) attrs.push(opts.extended ? "\\NonExistent" : "\\Noselect");
  attrs.push(e.hasChildren ? "\\HasChildren" : "\\HasNoChildren");
  if (opts.subscribedAttr && e.subscribed) attrs.push("\\Subscribed");
  if (e.specialUse) attrs.push(e.specialUse);
  return attrs;
}

async function runList(s: Session, args: Token[], lsub: boolean): Promise<void> {
  let i = 0;
  const selection = new Set<string>();
  const returns = new Set<string>();
  let statusReq: string[] | null = null;
  let extended = false;
  if (!lsub && args[0]?.type === "list") {
    extended = true;
    for (const t of args[0].items) {
      if (!isAtom(t)) throw bad("Invalid LIST selection option");
      const o = t.value.toUpperCase();
      if (!["SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"].includes(o))
        throw bad(`Unknown LIST selection option ${o.slice(0, 20)}`);
      selection.add(o);
    }
    if (selection.has("RECURSIVEMATCH") && !selection.has("SUBSCRIBED") && !selection.has("SPECIAL-USE"))
      throw bad("RECURSIVEMATCH needs another selection option");
    i++;
  }
  const refTok = args[i++];
  const patTok = args[i++];
  if (!refTok || !patTok) throw bad("LIST needs a reference and a mailbox pattern");
  const reference = decodePattern(s, refTok);
  let patterns: string[];
  if (patTok.type === "list") {
    if (lsub) throw bad("Invalid mailbox pattern");
    extended = true;
    if (patTok.items.length === 0) throw bad("Empty pattern list");
    patterns = patTok.items.map((t) => decodePattern(s, t));
  } else patterns = [decodePattern(s, patTok)];
  if (args[i]) {
    if (lsub || !isAtom(args[i], "RETURN") || args[i + 1]?.type !== "list" || args.length > i + 2) throw bad("Invalid LIST arguments");
    extended = true;
    const opts = (args[i + 1] as { items: Token[] }).items;
    for (let k = 0; k < opts.length; k++) {
      const t = opts[k]!;
      if (!isAtom(t)) throw bad("Invalid LIST return option");
      const o = t.value.toUpperCase();
      if (o === "STATUS") {
        const list = opts[++k];
        if (list?.type !== "list") throw bad("STATUS return option needs a list");
        statusReq = statusItems(list.items);
      } else if (["SUBSCRIBED", "CHILDREN", "SPECIAL-USE"].includes(o)) returns.add(o);
      else throw bad(`Unknown LIST return option ${o.slice(0, 20)}`);
    }
  }

  const sep = str("/");
  // LIST "" "" : the hierarchy delimiter and root (RFC 3501 §6.3.8).
  if (patterns.length === 1 && patterns[0] === "") {
    s.untagged(lsub ? "LSUB" : "LIST", [["\\Noselect"], sep, str("")]);
    return;
  }
  const all = await allMailboxes(s);
  const matchers = patterns.filter((p) => p !== "").map((p) => patternMatcher(canonical(reference, p)));
  const matches = (name: string) => matchers.some((m) => m(name));
  const names = [...all.keys()].sort((a, b) => (a === "INBOX" ? -1 : b === "INBOX" ? 1 : a < b ? -1 : a > b ? 1 : 0));
  const kw = lsub ? "LSUB" : "LIST";
  const out: Array<{ name: string; attrs: string[]; childInfo?: boolean }> = [];

  if (lsub || selection.has("SUBSCRIBED")) {
    const subs = await subscribedNames(s, all);
    const listed = new Set<string>();
    for (const name of [...subs].sort()) {
      const e = all.get(name) ?? { name, exists: false, subscribed: true, hasChildren: false };
      if (matches(name)) {
        listed.add(name);
        if (lsub) out.push({ name, attrs: e.exists ? [] : ["\\Noselect"] });
        else out.push({ name, attrs: [...attributes({ ...e, subscribed: true }, { subscribedAttr: true, extended: true })] });
      }
    }
    // Superiors of subscribed names that only match through `%` (RFC 3501 §6.3.9, RFC 5258 RECURSIVEMATCH).
    for (const name of subs) {
      for (const p of parents(name)) {
        if (listed.has(p) || !matches(p)) continue;
        if (lsub) {
          if (patterns.some((pat) => pat.endsWith("%"))) {
            listed.add(p);
            out.push({ name: p, attrs: ["\\Noselect"] });
          }
        } else if (selection.has("RECURSIVEMATCH")) {
          const e = all.get(p) ?? { name: p, exists: false, subscribed: false, hasChildren: true };
          listed.add(p);
          out.push({ name: p, attrs: attributes(e, { subscribedAttr: returns.has("SUBSCRIBED"), extended: true }), childInfo: true });
        }
      }
    }
    if (!lsub) {
      for (const o of out.sort((a, b) => (a.name < b.name ? -1 : 1))) {
        const ext: Value[] = [o.attrs, sep, str(s.mailboxOut(o.name))];
        if (o.childInfo) ext.push([str("CHILDINFO"), [str("SUBSCRIBED")]]);
        s.untagged(kw, ext);
      }
      return;
    }
    for (const o of out) s.untagged(kw, [o.attrs, sep, str(s.mailboxOut(o.name))]);
    return;
  }

  for (const name of names) {
    const e = all.get(name)!;
    if (!matches(name)) continue;
    if (selection.has("SPECIAL-USE") && !e.specialUse) continue;
    s.untagged(kw, [attributes(e, { subscribedAttr: returns.has("SUBSCRIBED"), extended }), sep, str(s.mailboxOut(name))]);
    if (statusReq && e.exists) {
      try {
        const values = await statusValues(s, name, statusReq);
        s.untagged("STATUS", [str(s.mailboxOut(name)), values]);
      } catch {
        // a mailbox that went away meanwhile is simply not reported
      }
    }
  }
}

/** Reference + pattern (RFC 3501 §6.3.8: the reference is a prefix of the pattern). */
function canonical(reference: string, pattern: string): string {
  if (reference === "" || pattern.startsWith("/")) return pattern;
  if (reference.endsWith("/")) return reference + pattern;
  return `${reference}/${pattern}`;
}

export const list: CommandSpec = {
  name: "LIST",
  states: AUTHENTICATED,
  args: [{ kind: "any", name: "arguments", rest: true }],
  run: (s, args) => runList(s, args, false),
};

export const lsub: CommandSpec = {
  name: "LSUB",
  states: AUTHENTICATED,
  args: [
    { kind: "astring", name: "reference" },
    { kind: "astring", name: "mailbox pattern" },
  ],
  run: (s, args) => runList(s, args, true),
};
