/** NOOP (RFC 3501 §6.1.2): does nothing but lets the session report mailbox changes. */
import { ANY_STATE, type CommandSpec } from "../command";

export const noop: CommandSpec = {
  name: "NOOP",
  states: ANY_STATE,
  args: [],
  async run() {},
};
