/**
 * CAPA (RFC 2449 §5). USER and SASL PLAIN are left out where a plaintext login would be refused
 * (no TLS, untrusted client); STLS only while it can be used.
 */
import { defineCommand } from "../command";
import { multiline } from "../wire";

export default defineCommand({
  name: "CAPA",
  states: ["AUTHORIZATION", "TRANSACTION"],
  args: [],
  async run(s) {
    await s.send(multiline("Capability list follows", s.capabilities()));
  },
});
