/**
 * What a command module declares (WildDuck imap-core / mox style): its name, the states it is
 * valid in (RFC 3501 §3, §6), the shape of its arguments, and a handler. The session looks the
 * command up in a Map and runs the generic checks before the handler sees anything.
 */
import type { Value } from "./compiler";
import { type Token, tokenText } from "./parser";
import { parseSeqSet } from "./seqset";
import type { Session } from "./session";

export type State = "notAuthenticated" | "authenticated" | "selected" | "logout";

export const ANY_STATE: State[] = ["notAuthenticated", "authenticated", "selected"];
export const AUTHENTICATED: State[] = ["authenticated", "selected"];
export const SELECTED: State[] = ["selected"];
export const NOT_AUTHENTICATED: State[] = ["notAuthenticated"];

/**
 * Argument kinds:
 * - `atom`: a bare atom;
 * - `astring`: atom or string (RFC 3501 astring);
 * - `string`: quoted string or literal;
 * - `mailbox`: an astring naming a mailbox;
 * - `list`: a parenthesized list;
 * - `number`: digits (number / nz-number);
 * - `seqset`: a sequence set (or `$`);
 * - `any`: anything.
 */
export type ArgKind = "atom" | "astring" | "string" | "mailbox" | "list" | "number" | "seqset" | "any";

export interface ArgSpec {
  kind: ArgKind;
  /** Name used in error messages. */
  name: string;
  optional?: boolean;
  /** Takes every remaining argument (must be last). */
  rest?: boolean;
}

export interface Result {
  status: "OK" | "NO" | "BAD";
  code?: { name: string; args?: Value[] };
  text: string;
}

export interface CommandSpec {
  name: string;
  states: State[];
  args: ArgSpec[];
  /**
   * RFC 3501 §7.4.1: EXPUNGE responses may not be sent while a FETCH, STORE or SEARCH (by
   * sequence number) is answered. Those commands set this to false.
   */
  expungeAllowed?: boolean;
  /**
   * The handler. Returns the tagged result (OK by default) or throws `ImapError`. Handlers that
   * write their own tagged response (LOGOUT, STARTTLS) return `ANSWERED`.
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: handlers that just succeed return nothing
  run(session: Session, args: Token[], tag: string): Promise<Result | typeof ANSWERED | void>;
}

/** Returned by a handler that has written its own tagged response. */
export const ANSWERED = { answered: true } as const;

/** An error that carries its tagged response (mox: errors that carry their reply codes). */
export class ImapError extends Error {
  constructor(
    readonly status: "NO" | "BAD",
    message: string,
    readonly code?: { name: string; args?: Value[] },
  ) {
    super(message);
    this.name = "ImapError";
  }
}

export const no = (text: string, code?: string, args?: Value[]): ImapError =>
  new ImapError("NO", text, code ? (args ? { name: code, args } : { name: code }) : undefined);
export const bad = (text: string, code?: string): ImapError => new ImapError("BAD", text, code ? { name: code } : undefined);
export const ok = (text: string, code?: string, args?: Value[]): Result => {
  const r: Result = { status: "OK", text };
  if (code) r.code = args ? { name: code, args } : { name: code };
  return r;
};

/** The generic argument checker: returns an error message, or null when the arguments fit. */
export function checkArgs(spec: ArgSpec[], args: Token[]): string | null {
  let i = 0;
  for (const a of spec) {
    if (a.rest) {
      if (i >= args.length && !a.optional) return `Missing ${a.name}`;
      for (; i < args.length; i++) {
        const err = checkOne(a, args[i]!);
        if (err) return err;
      }
      return null;
    }
    const t = args[i];
    if (t === undefined) {
      if (a.optional) continue;
      return `Missing ${a.name}`;
    }
    const err = checkOne(a, t);
    if (err) {
      if (a.optional) continue; // an optional argument that is absent; the next spec may match
      return err;
    }
    i++;
  }
  if (i < args.length) return "Too many arguments";
  return null;
}

function checkOne(a: ArgSpec, t: Token): string | null {
  switch (a.kind) {
    case "any":
      return null;
    case "atom":
      return t.type === "atom" && !t.section ? null : `Invalid ${a.name}: expected an atom`;
    case "astring":
    case "mailbox":
      return tokenText(t) !== null ? null : `Invalid ${a.name}: expected a string`;
    case "string":
      return t.type === "string" ? null : `Invalid ${a.name}: expected a string`;
    case "list":
      return t.type === "list" ? null : `Invalid ${a.name}: expected a list`;
    case "number":
      return t.type === "atom" && /^\d{1,20}$/.test(t.value) ? null : `Invalid ${a.name}: expected a number`;
    case "seqset":
      return t.type === "atom" && !t.section && parseSeqSet(t.value) !== null ? null : `Invalid ${a.name}`;
  }
}
