/** CAPABILITY (RFC 3501 §6.1.1). */
import { ANY_STATE, type CommandSpec } from "../command";

export const capability: CommandSpec = {
  name: "CAPABILITY",
  states: ANY_STATE,
  args: [],
  async run(s) {
    s.untagged("CAPABILITY", s.capabilities());
  },
};
