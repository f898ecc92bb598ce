/** UNSELECT (RFC 3691): leaves the selected state without expunging. */
import { type CommandSpec, SELECTED } from "../command";

export const unselect: CommandSpec = {
  name: "UNSELECT",
  states: SELECTED,
  args: [],
  async run(s) {
    await s.unselect(false);
  },
};
