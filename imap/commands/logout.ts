/** LOGOUT (RFC 3501 §6.1.3): BYE, then the tagged OK, then the connection closes. */
import { ANSWERED, ANY_STATE, type CommandSpec } from "../command";

export const logout: CommandSpec = {
  name: "LOGOUT",
  states: ANY_STATE,
  args: [],
  async run(s, _args, tag) {
    s.send({ tag: "*", command: "BYE", text: "Logging out" });
    s.tagged(tag, { status: "OK", text: "LOGOUT completed" });
    s.state = "logout";
    await s.flush();
    s.end();
    return ANSWERED;
  },
};
