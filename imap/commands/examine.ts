/** EXAMINE (RFC 3501 §6.3.2): SELECT, read-only. */
import { AUTHENTICATED, type CommandSpec } from "../command";
import { selectMailbox } from "./select";

export const examine: CommandSpec = {
  name: "EXAMINE",
  states: AUTHENTICATED,
  args: [
    { kind: "mailbox", name: "mailbox" },
    { kind: "list", name: "parameters", optional: true },
  ],
  run: (s, args) => selectMailbox(s, args, true),
};
