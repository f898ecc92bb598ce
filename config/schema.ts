/**
 * The one stack-config schema. A stack file (`stacks/Pulumi.<env>.yaml`) is parsed once, here,
 * into a typed `MailConfig`; every service, the CLI and the Pulumi program take that object.
 *
 * Keys live in the `mailstack:` namespace of the stack file's `config:` map, as Pulumi stores them.
 * Every problem is reported with its key path (`mailstack:users[1].name`) and a reason, all at once.
 */
import { isIP } from "node:net";
import { z } from "zod";
import { cidrContains, parseCidr } from "../lib/cidr";
import { ConfigError, type ConfigProblem, NAMESPACE } from "./errors";

export { ConfigError, type ConfigProblem, NAMESPACE };

// RFC 1035 host names (letters, digits, hyphens; labels ≤ 63; name ≤ 253), at least two labels.
const HOST_RE = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;
// Local parts we accept for users and aliases: dot-atom without '+', which is the sub-address separator.
const LOCAL_RE = /^[a-z0-9!#$%&'*/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*/=?^_`{|}~-]+)*$/i;
const ADDRESS_RE = /^[^\s@]+@[^\s@]+$/;

const hostname = z
  .string()
  .transform((s) => s.toLowerCase().replace(/\.$/, ""))
  .refine((s) => HOST_RE.test(s), { message: "is not a valid domain name" });
const ip = z.string().refine((s) => isIP(s) !== 0, { message: "is not an IPv4 or IPv6 address" });
const cidr = z.string().refine((s) => parseCidr(s) !== null, { message: "is not a valid CIDR (e.g. 192.168.25.0/24)" });
/** 0 asks the OS for an ephemeral port (tests); services report the port they bound. */
const port = z.number().int().min(0).max(65535);

/** An endpoint: a port, or `{ address, port }`. `false` switches the listener off. */
const endpoint = z.union([port.transform((p) => ({ port: p })), z.object({ address: ip.optional(), port }).strict(), z.literal(false)]);

/** Sizes may be bytes or strings like `10MiB`, `1GB`. */
const size = z.union([
  z.number().int().nonnegative(),
  z
    .string()
    .regex(/^\d+(\.\d+)?\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?$/i, "is not a size such as 10MiB")
    .transform(parseSize),
]);

/** Durations may be seconds or strings like `5m`, `5d`, `30s`. */
const duration = z.union([
  z.number().nonnegative(),
  z
    .string()
    .regex(/^\d+(\.\d+)?\s*(ms|s|m|h|d)$/, "is not a duration such as 30s, 5m, 5d")
    .transform(parseDuration),
]);

/** An OpenSSH public key line: the key type, its base64 blob, an optional comment. */
const SSH_PUBLIC_KEY =
  /^(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]{32,}={0,2}(?: .*)?$/;

/** A Pulumi `secure:` value that nobody decrypted reaches us as `{ secure: "v1:..." }`. */
const secureBlob = z.object({ secure: z.string() }).strict();
const secretString = z.union([z.string().min(1), secureBlob]);

const user = z
  .object({
    name: z.string().refine((s) => LOCAL_RE.test(s), { message: "is not a valid mailbox name" }),
    /** Plaintext password; only ever as a Pulumi secret. The deployment hashes it. */
    password: secretString.optional(),
    /** An argon2id (`$argon2id$...`) or `{SHA512-CRYPT}$6$...` hash. */
    passwordHash: z
      .string()
      .refine((s) => /^\$argon2id\$/.test(s) || /^(\{SHA512-CRYPT\})?\$6\$/.test(s), {
        message: "must be an argon2id hash ($argon2id$...) or {SHA512-CRYPT}$6$...",
      })
      .optional(),
    aliases: z.array(z.string()).default([]),
    quota: size.optional(),
  })
  .strict();

const dnsRecord = z
  .object({
    name: z.string(),
    type: z.enum(["A", "AAAA", "CNAME", "MX", "TXT", "SRV", "NS", "PTR", "CAA"]),
    value: z.string(),
    ttl: z.number().int().positive().optional(),
  })
  .strict();

const relayhost = z
  .object({
    host: z.string(),
    port: port.default(587),
    username: z.string().optional(),
    password: secretString.optional(),
  })
  .strict();

const rawSchema = z
  .object({
    domain: hostname,
    hostname: hostname.optional(),
    myorigin: hostname.optional(),
    destinations: z.array(hostname).optional(),
    /** The host's public address: A record, PTR, and where ports are published. */
    publicAddress: ip,
    publicAddress6: ip.optional(),
    trustedNetworks: z.array(cidr).default([]),
    relayDomains: z.array(hostname).default([]),
    /** The user who receives postmaster, abuse, MAILER-DAEMON, bin, root, ... Default: the first user. */
    admin: z.string().optional(),
    users: z.array(user).min(1, "at least one user is required"),
    aliases: z.record(z.string(), z.union([z.string(), z.array(z.string()).min(1)])).default({}),
    /** Where Maildirs, the queue and certificates live. Relative paths are relative to the repo. */
    dataDir: z.string().min(1),
    listen: z
      .object({
        /** Default address for every endpoint that does not name its own. */
        address: ip.default("0.0.0.0"),
        smtp: endpoint.default({ port: 25 }),
        submission: endpoint.default({ port: 587 }),
        smtps: endpoint.default({ port: 465 }),
        pop3: endpoint.default({ port: 110 }),
        pop3s: endpoint.default({ port: 995 }),
        imap: endpoint.default({ port: 143 }),
        imaps: endpoint.default({ port: 993 }),
        dns: endpoint.default({ port: 53 }),
      })
      .strict()
      .prefault({}),
    tls: z
      .object({
        cert: z.string().optional(),
        key: secretString.optional(),
        certFile: z.string().optional(),
        keyFile: z.string().optional(),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        messageSize: size.default(10 * 1024 * 1024),
        recipients: z.number().int().positive().default(1000),
        connectionsPerClient: z.number().int().positive().default(20),
        maxConnections: z.number().int().positive().default(2000),
        idleTimeout: duration.default(300),
        badCommands: z.number().int().positive().default(10),
        authFailures: z.number().int().positive().default(5),
        /** Seconds every failed login waits before its answer. */
        authFailureDelay: duration.default(1),
        imapLineLength: size.default(64 * 1024),
        hopCount: z.number().int().positive().default(50),
      })
      .strict()
      .prefault({}),
    /** DNS servers the services use ("ip" or "ip:port"). Empty: no DNS from the mail services at all. */
    resolvers: z.array(z.string()).default([]),
    reverseLookups: z.boolean().default(false),
    dns: z
      .object({
        ttl: z.number().int().positive().default(3600),
        mxPreference: z.number().int().min(0).max(65535).default(10),
        /** Name server host name; default `ns1.<domain>`, with the public address. */
        nameserver: hostname.optional(),
        dmarcPolicy: z.enum(["none", "quarantine", "reject"]).default("quarantine"),
        spf: z.string().default("v=spf1 mx -all"),
        /** Reverse zone network; default the /24 (IPv4) around publicAddress. */
        reverseNetwork: cidr.optional(),
        records: z.array(dnsRecord).default([]),
        /** Addresses allowed to AXFR and sent NOTIFY ("ip" or "ip:port"). */
        secondaries: z.array(z.string()).default([]),
        /** Upstream resolvers for recursion on behalf of trusted clients ("ip" or "ip:port"). */
        upstream: z.array(z.string()).default([]),
        /** Responses per second per /24 (or /56) before rate limiting. 0 turns it off. */
        rateLimit: z.number().int().nonnegative().default(100),
        /** Threads answering UDP, each with its own socket on the port. Default: one per core but one, 1 to 2. */
        threads: z.number().int().min(1).max(64).optional(),
      })
      .strict()
      .prefault({}),
    queue: z
      .object({
        /** First retry after this, then doubling up to maxBackoff. Postfix: 300s and 4000s. */
        minBackoff: duration.default(300),
        maxBackoff: duration.default(4000),
        maxLifetime: duration.default(5 * 86400),
        scanInterval: duration.default(1),
        /** Port remote MTAs listen on (25 on the internet; tests use others). */
        remotePort: port.default(25),
        relayhost: relayhost.optional(),
      })
      .strict()
      .prefault({}),
    /** Pulumi deployment settings; not used by the local run. */
    deploy: z
      .object({
        sshUser: z.string().default("root"),
        sshPort: port.default(22),
        sshPrivateKey: secretString.optional(),
        /**
         * The host's SSH public key, as in its /etc/ssh/ssh_host_ed25519_key.pub (ssh-keyscan
         * prints it after the host name): the host steps and the Docker provider accept no
         * other. Without it the key is accepted on first use. Kept as `<type> <base64>` (a
         * trailing comment is dropped).
         */
        sshHostKey: z
          .string()
          .trim()
          .regex(
            SSH_PUBLIC_KEY,
            "must be an SSH public key line `<type> <base64>` (e.g. ssh-ed25519 AAAA…), as in /etc/ssh/ssh_host_ed25519_key.pub",
          )
          .transform((k) => k.split(/\s+/).slice(0, 2).join(" "))
          .optional(),
        /** A pinned image reference (name@sha256:...). Without it the image is built on the host. */
        image: z.string().optional(),
        baseImage: z.string().optional(),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type RawConfig = z.input<typeof rawSchema>;
type Parsed = z.output<typeof rawSchema>;

export interface Endpoint {
  address: string;
  port: number;
}
export type ServiceName = "smtp" | "pop3" | "imap" | "dns";
export type EndpointName = "smtp" | "submission" | "smtps" | "pop3" | "pop3s" | "imap" | "imaps" | "dns";

export interface UserConfig {
  name: string;
  /** Plaintext from a Pulumi secret, only inside the deployment program. Never written anywhere. */
  password?: string;
  passwordHash?: string;
  aliases: string[];
  quota?: number;
}

/** The typed, defaulted, cross-checked config every part of mailstack takes. */
export interface MailConfig {
  domain: string;
  hostname: string;
  myorigin: string;
  destinations: string[];
  publicAddress: string;
  publicAddress6?: string;
  trustedNetworks: string[];
  relayDomains: string[];
  admin: string;
  users: UserConfig[];
  /** Lower-cased alias name → targets (local names or external addresses). Includes system aliases. */
  aliases: Record<string, string[]>;
  dataDir: string;
  listen: Record<EndpointName, Endpoint | null>;
  tls: Parsed["tls"];
  limits: {
    messageSize: number;
    recipients: number;
    connectionsPerClient: number;
    maxConnections: number;
    idleTimeout: number;
    badCommands: number;
    authFailures: number;
    authFailureDelay: number;
    imapLineLength: number;
    hopCount: number;
  };
  resolvers: string[];
  reverseLookups: boolean;
  dns: Omit<Parsed["dns"], "nameserver" | "reverseNetwork"> & { nameserver: string; reverseNetwork: string };
  queue: Omit<Parsed["queue"], "relayhost"> & {
    minBackoff: number;
    maxBackoff: number;
    maxLifetime: number;
    scanInterval: number;
    relayhost?: { host: string; port: number; username?: string; password?: string };
  };
  deploy: Omit<Parsed["deploy"], "sshPrivateKey"> & { sshPrivateKey?: string };
}

/** The aliases Postfix and RHEL ship in /etc/aliases, all delivered to the admin user. */
export const SYSTEM_ALIASES = [
  "postmaster",
  "abuse",
  "mailer-daemon",
  "hostmaster",
  "webmaster",
  "security",
  "noc",
  "root",
  "bin",
  "daemon",
  "adm",
  "lp",
  "sync",
  "shutdown",
  "halt",
  "mail",
  "news",
  "uucp",
  "operator",
  "games",
  "ftp",
  "nobody",
  "dbus",
  "nscd",
  "named",
  "postfix",
  "dovecot",
  "sshd",
  "ntp",
  "usenet",
] as const;

function keyPath(path: readonly PropertyKey[]): string {
  let out = NAMESPACE;
  path.forEach((seg, i) => {
    if (typeof seg === "number") out += `[${seg}]`;
    else out += i === 0 ? `:${String(seg)}` : `.${String(seg)}`;
  });
  return out;
}

/**
 * Takes the `config:` map of a stack file (keys `mailstack:domain`, ... ; other namespaces ignored)
 * or an already-unprefixed object, and returns the typed config. Throws `ConfigError` listing
 * every problem with its key path.
 */
export function parseConfig(raw: Record<string, unknown>, source?: string): MailConfig {
  const unprefixed: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw ?? {})) {
    if (k.startsWith(`${NAMESPACE}:`)) unprefixed[k.slice(NAMESPACE.length + 1)] = v;
    else if (!k.includes(":")) unprefixed[k] = v;
  }
  const result = rawSchema.safeParse(unprefixed);
  if (result.success) {
    const problems: ConfigProblem[] = [];
    const config = resolve(result.data, problems);
    if (problems.length > 0) throw new ConfigError(problems, source);
    return config;
  }
  // Report every problem at once: set the malformed parts aside, check the rest as a whole
  // (open relays, duplicate users, alias loops, ...), and list both kinds together.
  const problems = result.error.issues.flatMap((i) => flattenIssue(i, []));
  const repaired = repair(unprefixed, result.error.issues);
  const second = rawSchema.safeParse(repaired.value);
  if (second.success) {
    const more: ConfigProblem[] = [];
    resolve(second.data, more);
    const masked = repaired.masked.map((k) => keyPath([k]));
    for (const m of more) {
      const p = { ...m, path: repaired.original(m.path) };
      const isMasked = masked.some((k) => p.path === k || p.path.startsWith(`${k}.`) || p.path.startsWith(`${k}[`));
      if (!isMasked && !problems.some((q) => q.path === p.path)) problems.push(p);
    }
  }
  throw new ConfigError(problems, source);
}

/** Stand-ins for required keys whose value is malformed, so the rest can still be checked. */
const PLACEHOLDERS: Record<string, unknown> = { domain: "invalid.invalid", publicAddress: "192.0.2.1", dataDir: "/nonexistent" };

/**
 * The raw config without its malformed parts: bad array elements are dropped, other bad keys
 * fall back to their default (or a placeholder when required). `masked` lists the top-level
 * keys whose checks would be about the stand-in rather than the user's value.
 */
function repair(
  raw: Record<string, unknown>,
  issues: z.core.$ZodIssue[],
): { value: Record<string, unknown>; masked: string[]; original: (path: string) => string } {
  const value: Record<string, unknown> = { ...raw };
  const masked = new Set<string>();
  const dropped = new Map<string, Set<number>>();
  for (const issue of issues) {
    const [key, index] = issue.path;
    if (typeof key !== "string") continue;
    if (Array.isArray(raw[key]) && typeof index === "number") {
      if (!dropped.has(key)) dropped.set(key, new Set());
      dropped.get(key)!.add(index);
    } else if (issue.code === "unrecognized_keys" && issue.path.length === 0) {
      for (const k of issue.keys) delete value[k];
    } else {
      masked.add(key);
      if (key in PLACEHOLDERS) value[key] = PLACEHOLDERS[key];
      else delete value[key];
    }
  }
  const kept = new Map<string, number[]>();
  for (const [key, indexes] of dropped) {
    if (masked.has(key)) continue;
    const positions = (raw[key] as unknown[]).map((_, i) => i).filter((i) => !indexes.has(i));
    kept.set(key, positions);
    value[key] = positions.map((i) => (raw[key] as unknown[])[i]);
  }
  if (masked.has("publicAddress")) masked.add("dns");
  /** A path in the repaired config → the same element's path in the user's config. */
  const original = (path: string) =>
    path.replace(/^([^:]+:)([A-Za-z]+)\[(\d+)\]/, (whole, ns: string, key: string, i: string) => {
      const positions = kept.get(key);
      return positions ? `${ns}${key}[${positions[Number(i)]}]` : whole;
    });
  return { value, masked: [...masked], original };
}

/** Unions report the most specific branch's problem, so `listen.smtp: 70000` says "≤ 65535". */
function flattenIssue(issue: z.core.$ZodIssue, prefix: PropertyKey[]): ConfigProblem[] {
  const path = [...prefix, ...issue.path];
  if (issue.code === "invalid_union" && issue.errors.length > 0) {
    const branches = issue.errors.filter((b) => b.length > 0 && b.every((i) => i.code !== "invalid_type"));
    const best = branches[0] ?? issue.errors.reduce((a, b) => (b.length > 0 && b[0]!.path.length > (a[0]?.path.length ?? -1) ? b : a));
    if (best && best.length > 0) return best.flatMap((i) => flattenIssue(i, path));
  }
  return [{ path: keyPath(path), message: describeIssue(issue) }];
}

function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === "unrecognized_keys") return `unknown key(s) ${issue.keys.join(", ")}`;
  if (issue.code === "invalid_type" && issue.input === undefined) return "is required";
  return issue.message;
}

function resolve(p: Parsed, problems: ConfigProblem[]): MailConfig {
  const add = (path: PropertyKey[], message: string) => problems.push({ path: keyPath(path), message });
  const hostnameValue = p.hostname ?? `mail.${p.domain}`;

  // Trusted networks: never the whole internet (open relay).
  p.trustedNetworks.forEach((n, i) => {
    const c = parseCidr(n);
    if (c && c.prefix === 0) add(["trustedNetworks", i], `${n} trusts every address and would make an open relay`);
  });

  // Users: unique, with exactly one way to log in.
  const userNames = new Map<string, number>();
  const users: UserConfig[] = p.users.map((u, i) => {
    const lname = u.name.toLowerCase();
    if (userNames.has(lname)) add(["users", i, "name"], `duplicate user "${u.name}" (also users[${userNames.get(lname)}])`);
    else userNames.set(lname, i);
    if (u.password === undefined && u.passwordHash === undefined)
      add(["users", i], `user "${u.name}" has no password: set password (as a Pulumi secret) or passwordHash`);
    if (typeof u.password === "object")
      add(
        ["users", i, "password"],
        "is an encrypted Pulumi secret that was not decrypted; run through Pulumi or set passwordHash (mailstack hash-password)",
      );
    const out: UserConfig = { name: lname, aliases: u.aliases.map((a) => a.toLowerCase()) };
    if (typeof u.password === "string") out.password = u.password;
    if (u.passwordHash !== undefined) out.passwordHash = u.passwordHash;
    if (u.quota !== undefined) out.quota = u.quota;
    return out;
  });

  const admin = (p.admin ?? users[0]?.name ?? "").toLowerCase();
  if (p.admin !== undefined && !userNames.has(admin)) add(["admin"], `"${p.admin}" is not a user`);

  // Aliases: system ones to the admin, then users' own aliases, then the explicit map (which wins).
  const aliases: Record<string, string[]> = {};
  for (const s of SYSTEM_ALIASES) if (!userNames.has(s)) aliases[s] = [admin];
  for (const [i, u] of users.entries()) {
    for (const [j, a] of u.aliases.entries()) {
      if (userNames.has(a)) add(["users", i, "aliases", j], `"${a}" is already a user`);
      else aliases[a] = [...(aliases[a] && !SYSTEM_ALIASES.includes(a as never) ? aliases[a] : []), u.name];
    }
  }
  for (const [name, targets] of Object.entries(p.aliases)) {
    const lname = name.toLowerCase();
    if (!LOCAL_RE.test(lname)) add(["aliases", name], "is not a valid alias name");
    if (userNames.has(lname)) add(["aliases", name], `"${name}" is already a user`);
    aliases[lname] = (Array.isArray(targets) ? targets : [targets]).map((t) => t.trim());
  }
  const destinations = (p.destinations ?? [hostnameValue, p.domain]).map((d) => d.toLowerCase());
  const isLocalDomain = (d: string) => destinations.includes(d.toLowerCase());
  for (const [name, targets] of Object.entries(aliases)) {
    const explicit = Object.keys(p.aliases).find((k) => k.toLowerCase() === name);
    const path = explicit !== undefined ? ["aliases", explicit] : ["admin"];
    targets.forEach((t, j) => {
      if (t.includes("@")) {
        if (!ADDRESS_RE.test(t)) add([...path, j], `"${t}" is not a valid address`);
        const [local, dom] = [t.slice(0, t.lastIndexOf("@")).toLowerCase(), t.slice(t.lastIndexOf("@") + 1)];
        if (isLocalDomain(dom) && !userNames.has(local.split("+")[0]!) && !(local in aliases))
          add([...path, j], `target "${t}" is not a user or alias`);
      } else if (!userNames.has(t.toLowerCase().split("+")[0]!) && !(t.toLowerCase() in aliases)) {
        add([...path, j], `target "${t}" is not a user or alias`);
      }
    });
  }
  // Alias loops (a → b → a) never terminate expansion into a mailbox.
  for (const loop of findAliasLoops(aliases, destinations)) {
    const explicit = Object.keys(p.aliases).find((k) => k.toLowerCase() === loop[0]);
    add(["aliases", explicit ?? loop[0]!], `alias loop: ${loop.join(" → ")}`);
  }

  const listen = {} as Record<EndpointName, Endpoint | null>;
  for (const [name, ep] of Object.entries(p.listen)) {
    if (name === "address") continue;
    const e = ep as false | { address?: string; port: number };
    listen[name as EndpointName] = e === false ? null : { address: e.address ?? p.listen.address, port: e.port };
  }
  // Two listeners on one address and port cannot both bind.
  const seen = new Map<string, string>();
  for (const [name, e] of Object.entries(listen)) {
    if (!e || e.port === 0) continue;
    const key = `${e.address}:${e.port}`;
    if (seen.has(key)) add(["listen", name], `${key} is also used by listen.${seen.get(key)}`);
    else seen.set(key, name);
  }

  if ((p.tls.cert === undefined) !== (p.tls.key === undefined)) add(["tls"], "cert and key must be given together");
  if ((p.tls.certFile === undefined) !== (p.tls.keyFile === undefined)) add(["tls"], "certFile and keyFile must be given together");
  if (typeof p.tls.key === "object") add(["tls", "key"], "is an encrypted Pulumi secret that was not decrypted");

  const reverseNetwork = p.dns.reverseNetwork ?? defaultReverseNetwork(p.publicAddress);
  const rn = parseCidr(reverseNetwork);
  if (rn && !cidrContains(rn, p.publicAddress)) add(["dns", "reverseNetwork"], `does not contain ${p.publicAddress}`);

  const { relayhost: rh, ...queueRest } = p.queue;
  let relayhostValue: MailConfig["queue"]["relayhost"];
  if (rh) {
    if (typeof rh.password === "object") add(["queue", "relayhost", "password"], "is an encrypted Pulumi secret that was not decrypted");
    relayhostValue = { host: rh.host, port: rh.port };
    if (rh.username !== undefined) relayhostValue.username = rh.username;
    if (typeof rh.password === "string") relayhostValue.password = rh.password;
  }
  const { sshPrivateKey, ...deployRest } = p.deploy;

  const config: MailConfig = {
    domain: p.domain,
    hostname: hostnameValue,
    myorigin: p.myorigin ?? p.domain,
    destinations,
    publicAddress: p.publicAddress,
    trustedNetworks: p.trustedNetworks,
    relayDomains: p.relayDomains,
    admin,
    users,
    aliases,
    dataDir: p.dataDir,
    listen,
    tls: p.tls,
    limits: p.limits as MailConfig["limits"],
    resolvers: p.resolvers,
    reverseLookups: p.reverseLookups,
    dns: { ...p.dns, nameserver: p.dns.nameserver ?? `ns1.${p.domain}`, reverseNetwork },
    queue: { ...(queueRest as Omit<MailConfig["queue"], "relayhost">), ...(relayhostValue ? { relayhost: relayhostValue } : {}) },
    deploy: { ...deployRest, ...(typeof sshPrivateKey === "string" ? { sshPrivateKey } : {}) },
  };
  if (p.publicAddress6 !== undefined) config.publicAddress6 = p.publicAddress6;
  return config;
}

/** Every alias cycle, each as the list of names around it (first name repeated at the end). */
export function findAliasLoops(aliases: Record<string, string[]>, localDomains: string[]): string[][] {
  const local = (t: string): string | null => {
    const at = t.lastIndexOf("@");
    if (at < 0) return t.toLowerCase();
    return localDomains.includes(t.slice(at + 1).toLowerCase()) ? t.slice(0, at).toLowerCase() : null;
  };
  const loops: string[][] = [];
  const reported = new Set<string>();
  const state = new Map<string, "visiting" | "done">();
  const walk = (name: string, stack: string[]) => {
    if (state.get(name) === "done") return;
    if (state.get(name) === "visiting") {
      const cycle = stack.slice(stack.indexOf(name));
      const key = [...cycle].sort().join(",");
      if (!reported.has(key)) {
        reported.add(key);
        loops.push([...cycle, name]);
      }
      return;
    }
    state.set(name, "visiting");
    for (const t of aliases[name] ?? []) {
      const l = local(t);
      if (l !== null && l in aliases) walk(l, [...stack, name]);
    }
    state.set(name, "done");
  };
  for (const name of Object.keys(aliases)) walk(name, []);
  return loops;
}

function defaultReverseNetwork(address: string): string {
  if (isIP(address) === 4) return `${address.split(".").slice(0, 3).join(".")}.0/24`;
  return `${address}/64`;
}

export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(s.trim());
  if (!m) throw new Error(`bad size ${s}`);
  const units: Record<string, number> = {
    "": 1,
    b: 1,
    kb: 1e3,
    kib: 1024,
    mb: 1e6,
    mib: 1024 ** 2,
    gb: 1e9,
    gib: 1024 ** 3,
    tb: 1e12,
    tib: 1024 ** 4,
  };
  return Math.round(Number(m[1]) * (units[m[2]!.toLowerCase()] ?? 1));
}

export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(s.trim());
  if (!m) throw new Error(`bad duration ${s}`);
  const mult: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };
  return Number(m[1]) * mult[m[2]!]!;
}
