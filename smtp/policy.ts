/**
 * Who may do what: recipient routing and the relay decision (Postfix's
 * smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,
 * reject_unauth_destination), and where plaintext AUTH is allowed (Dovecot's
 * disable_plaintext_auth + login_trusted_networks).
 *
 * Relay tricks are never interpreted. At one of our domains a local part that routes somewhere
 * else (`user%other`, `other!user`, `user@other`, quoted or not, with or without a source route)
 * is refused as relaying, for every client; so no address we accept can ever mean a host other
 * than the one in its domain.
 */
import type { MailConfig } from "../config/schema";
import { networkMatcher, toBits, unmapV4 } from "../lib/cidr";
import { Aliases, isPlainLocalPart } from "../store/aliases";
import { formatMailbox, type Mailbox } from "./address";
import { SmtpError } from "./reply";

export type RcptRoute =
  /** Deliver to these local users (after alias expansion) and forward to these external addresses. */
  | { kind: "local"; address: string; users: string[]; forward: string[] }
  /** Relay to this external address through the outbound queue. */
  | { kind: "relay"; address: string };

export interface ClientContext {
  /** The client address is in trustedNetworks. */
  trusted: boolean;
  /** The client authenticated (SMTP AUTH). */
  authenticated: boolean;
}

/** Characters in a local part that name another host (percent hack, bang path, nested @). */
const ROUTING_CHARS = /[@%!]/;
/** What the queue accepts as an envelope address (no spaces, brackets or extra @). */
const QUEUEABLE_LOCAL = /^[^\s<>@"\\]+$/;

export class Policy {
  readonly aliases: Aliases;
  private readonly trustedMatch: (address: string) => boolean;
  private readonly relayDomains: Set<string>;
  private readonly ownLiterals: Set<string>;

  constructor(private readonly config: MailConfig) {
    this.aliases = new Aliases(config);
    this.trustedMatch = networkMatcher(config.trustedNetworks);
    this.relayDomains = new Set(config.relayDomains.map((d) => d.toLowerCase()));
    this.ownLiterals = new Set([config.publicAddress, config.publicAddress6].filter((a): a is string => !!a).map(canonicalIp));
  }

  isTrusted(address: string): boolean {
    return this.trustedMatch(unmapV4(address));
  }

  /** Plaintext AUTH (PLAIN, LOGIN) only over TLS or from trusted networks. */
  authAllowed(secure: boolean, trusted: boolean): boolean {
    return secure || trusted;
  }

  /** Is this domain (or address literal) one of ours? */
  isLocalDomain(m: Mailbox): boolean {
    if (m.literal !== undefined) return this.ownLiterals.has(canonicalIp(m.literal));
    return this.aliases.isLocalDomain(m.domain);
  }

  /**
   * Routes one RCPT TO. Returns the route or throws the reply: 550 5.1.1 for an unknown local
   * recipient, 554 5.7.1 for relaying that is not allowed (including every relay trick).
   */
  route(m: Mailbox, client: ClientContext): RcptRoute {
    const shown = formatMailbox(m);
    if (this.isLocalDomain(m)) {
      if (ROUTING_CHARS.test(m.local) || m.sourceRoute) throw relayDenied(shown);
      // A quoted local part that is a plain name ("lx") is the same mailbox as lx (RFC 5321 §2.4).
      if (!isPlainLocalPart(m.local)) throw userUnknown(shown);
      const domain = m.literal !== undefined ? this.config.domain : m.domain;
      const r = this.aliases.route(`${m.local}@${domain}`);
      if (r.kind !== "local") throw userUnknown(shown);
      return { kind: "local", address: `${m.local.toLowerCase()}@${domain}`, users: r.users, forward: r.forward };
    }
    const mayRelay =
      client.trusted || client.authenticated || (m.literal === undefined && this.relayDomains.has(m.domain) && !m.sourceRoute);
    if (!mayRelay) throw relayDenied(shown);
    if (!QUEUEABLE_LOCAL.test(m.local))
      throw new SmtpError(553, "5.1.3", `<${shown}>: Recipient address syntax not supported for relaying`);
    return { kind: "relay", address: `${m.local}@${m.domain}` };
  }
}

function relayDenied(shown: string): SmtpError {
  return new SmtpError(554, "5.7.1", `<${shown}>: Relay access denied`);
}

function userUnknown(shown: string): SmtpError {
  return new SmtpError(550, "5.1.1", `<${shown}>: Recipient address rejected: User unknown in local recipient table`);
}

/** One spelling per address (`::1` = `0:0::1`; `::ffff:1.2.3.4` = `1.2.3.4`). */
function canonicalIp(ip: string): string {
  const a = unmapV4(ip.toLowerCase());
  return `${a.includes(":") ? 6 : 4}:${toBits(a)}`;
}
