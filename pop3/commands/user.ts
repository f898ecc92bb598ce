/** USER name (RFC 1939 §7). Only over TLS or from trusted networks; the name is checked at PASS. */
import { defineCommand } from "../command";
import { ok, Pop3Error } from "../wire";
import { PLAINTEXT_REFUSED } from "./auth";

export default defineCommand({
  name: "USER",
  states: ["AUTHORIZATION"],
  args: [{ name: "name", kind: "rest" }],
  async run(s, args) {
    if (!s.plaintextAllowed) throw new Pop3Error(PLAINTEXT_REFUSED, "AUTH");
    // Same answer for every name: USER must not tell which users exist.
    s.pendingUser = String(args.name);
    await s.send(ok(""));
  },
});
