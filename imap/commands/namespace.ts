/** NAMESPACE (RFC 2342): one personal namespace, "" with separator "/"; no shared or other users'. */
import { AUTHENTICATED, type CommandSpec } from "../command";
import { str } from "../compiler";

export const namespace: CommandSpec = {
  name: "NAMESPACE",
  states: AUTHENTICATED,
  args: [],
  async run(s) {
    s.untagged("NAMESPACE", [[[str(""), str("/")]], null, null]);
  },
};
