/**
 * What a command declares (the states it is valid in and its arguments) and the generic checker
 * that enforces both before any handler runs. The handlers live in commands/, one per file.
 */
import type { ParsedCommand } from "./parser";
import type { Pop3Session, State } from "./session";

/**
 * - `msg`: a message number (RFC 1939: decimal, 1-based). Existence is checked by the handler.
 * - `lines`: a non-negative decimal count (TOP).
 * - `word`: one space-free argument.
 * - `rest`: everything after the keyword, spaces included (USER, PASS). Must be the only arg.
 */
export type ArgKind = "msg" | "lines" | "word" | "rest";

export interface ArgSpec {
  readonly name: string;
  readonly kind: ArgKind;
  readonly optional?: boolean;
}

export type ArgValues = Record<string, string | number | undefined>;

export interface CommandSpec {
  readonly name: string;
  readonly states: readonly State[];
  readonly args: readonly ArgSpec[];
  run(session: Pop3Session, args: ArgValues): Promise<void>;
}

export function defineCommand(spec: CommandSpec): CommandSpec {
  const rest = spec.args.findIndex((a) => a.kind === "rest");
  if (rest >= 0 && spec.args.length !== 1) throw new Error(`${spec.name}: a "rest" argument must be the only one`);
  const firstOptional = spec.args.findIndex((a) => a.optional);
  if (firstOptional >= 0 && spec.args.slice(firstOptional).some((a) => !a.optional))
    throw new Error(`${spec.name}: optional arguments must come last`);
  return spec;
}

/** Longest decimal we take: more digits than any maildrop has messages, and no float trouble. */
const DECIMAL = /^\d{1,9}$/;

export type ArgCheck = { ok: true; values: ArgValues } | { ok: false; error: string };

export function checkArgs(spec: CommandSpec, cmd: ParsedCommand): ArgCheck {
  const values: ArgValues = {};
  const only = spec.args[0];
  if (only && only.kind === "rest") {
    if (cmd.rest === "" && !only.optional) return { ok: false, error: `Missing argument: ${only.name}.` };
    if (cmd.rest !== "") values[only.name] = cmd.rest;
    return { ok: true, values };
  }
  let required = 0;
  for (const a of spec.args) if (!a.optional) required++;
  if (cmd.args.length < required) return { ok: false, error: `Missing argument: ${spec.args[cmd.args.length]!.name}.` };
  if (cmd.args.length > spec.args.length)
    return { ok: false, error: spec.args.length === 0 ? `${spec.name} takes no arguments.` : "Too many arguments." };
  for (let i = 0; i < cmd.args.length; i++) {
    const a = spec.args[i]!;
    const v = cmd.args[i]!;
    switch (a.kind) {
      case "msg":
        if (!DECIMAL.test(v)) return { ok: false, error: `Invalid message number: ${printable(v)}` };
        values[a.name] = Number(v);
        break;
      case "lines":
        if (!DECIMAL.test(v)) return { ok: false, error: `Invalid number of lines: ${printable(v)}` };
        values[a.name] = Number(v);
        break;
      default:
        values[a.name] = v;
    }
  }
  return { ok: true, values };
}

/** Client text echoed in a reply: printable ASCII only, and short. */
export function printable(s: string): string {
  const clean = s.replace(/[^\x20-\x7e]/g, "?");
  return clean.length > 40 ? `${clean.slice(0, 40)}...` : clean;
}
