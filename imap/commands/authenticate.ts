/**
 * AUTHENTICATE (RFC 3501 §6.2.2) with the PLAIN mechanism (RFC 4616) and the initial response
 * of SASL-IR (RFC 4959; `=` is an empty one). `*` cancels (BAD).
 */
import { bad, type CommandSpec, NOT_AUTHENTICATED, no } from "../command";
import { tokenText } from "../parser";
import { authenticateUser } from "./login";

export const authenticate: CommandSpec = {
  name: "AUTHENTICATE",
  states: NOT_AUTHENTICATED,
  args: [
    { kind: "atom", name: "mechanism" },
    { kind: "astring", name: "initial response", optional: true },
  ],
  async run(s, args) {
    const mech = tokenText(args[0]!)!.toUpperCase();
    if (mech !== "PLAIN") throw no(`Unsupported authentication mechanism ${mech.slice(0, 20)}`, "CANNOT");
    if (!s.plaintextAllowed) throw no("Plaintext authentication is not allowed without TLS; use STARTTLS", "PRIVACYREQUIRED");
    let response: string;
    if (args[1]) {
      response = tokenText(args[1])!;
    } else {
      s.sendRaw("+ \r\n");
      await s.flush();
      const line = await s.readRawLine();
      if (line === null) throw bad("Authentication aborted");
      response = line.toString("latin1").trim();
    }
    if (response === "*") throw bad("Authentication cancelled");
    if (response === "=") response = "";
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(response) || response.length % 4 !== 0) throw bad("Invalid base64 in SASL response");
    const parts = Buffer.from(response, "base64").toString("utf8").split("\0");
    if (parts.length !== 3) throw bad("Invalid SASL PLAIN response");
    const [authzid, authcid, password] = parts as [string, string, string];
    if (authzid !== "" && authzid !== authcid) {
      // Logging in as somebody else is not offered; answer like any failed login.
      s.authFailures++;
      throw no("Authentication failed", "AUTHORIZATIONFAILED");
    }
    return authenticateUser(s, authcid, password);
  },
};
