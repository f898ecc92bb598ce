/** CHECK (RFC 3501 §6.4.1): a checkpoint; our writes are durable already, so it is a NOOP. Not in IMAP4rev2. */
import { type CommandSpec, SELECTED } from "../command";

export const check: CommandSpec = {
  name: "CHECK",
  states: SELECTED,
  args: [],
  async run() {},
};
