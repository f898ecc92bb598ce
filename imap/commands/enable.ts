/**
 * ENABLE (RFC 5161) for CONDSTORE, QRESYNC (RFC 7162, which implies CONDSTORE) and IMAP4rev2
 * (RFC 9051 §6.3.1). Unknown extensions are ignored, as the RFC asks.
 */
import { AUTHENTICATED, type CommandSpec } from "../command";
import { tokenText } from "../parser";

const SUPPORTED = new Map([
  ["CONDSTORE", "CONDSTORE"],
  ["QRESYNC", "QRESYNC"],
  ["IMAP4REV2", "IMAP4rev2"],
]);

export const enable: CommandSpec = {
  name: "ENABLE",
  states: AUTHENTICATED,
  args: [{ kind: "atom", name: "capability", rest: true }],
  async run(s, args) {
    const newly: string[] = [];
    for (const a of args) {
      const name = tokenText(a)!.toUpperCase();
      const wire = SUPPORTED.get(name);
      if (!wire || s.enabled.has(name)) continue;
      s.enabled.add(name);
      newly.push(wire);
      if (name === "QRESYNC" && !s.enabled.has("CONDSTORE")) {
        s.enabled.add("CONDSTORE");
      }
      if (name === "CONDSTORE" || name === "QRESYNC") s.condstore = true;
    }
    s.untagged("ENABLED", newly);
  },
};
