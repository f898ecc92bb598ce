/**
 * What the outside world must hold for the mail host to be found: the delegation of the domain
 * to our DNS server (NS and glue at the registrar) and the PTR the hosting provider sets for the
 * public address (receivers check forward-confirmed reverse DNS). Pure.
 */
import { isIP } from "node:net";
import type { EndpointName, MailConfig } from "../config/schema";
import { CONTAINER_SERVICES, type ContainerService, serviceEndpoints } from "./specs";

export interface DnsRecord {
  name: string;
  type: "NS" | "A" | "AAAA" | "PTR";
  value: string;
  /** Who must publish it. */
  at: "registrar" | "hosting provider";
  note: string;
}

/** `192.168.25.100` → `100.25.168.192.in-addr.arpa.`; IPv6 as nibbles under ip6.arpa. */
export function reverseName(address: string): string {
  if (isIP(address) === 4) return `${address.split(".").reverse().join(".")}.in-addr.arpa.`;
  if (isIP(address) === 6) {
    const [head = "", tail] = address.split("::");
    const h = head ? head.split(":") : [];
    const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
    const groups = [...h, ...Array(tail !== undefined ? 8 - h.length - t.length : 0).fill("0"), ...t];
    return `${groups
      .map((g) => g.padStart(4, "0"))
      .join("")
      .split("")
      .reverse()
      .join(".")}.ip6.arpa.`;
  }
  throw new Error(`not an IP address: ${address}`);
}

export function registrarRecords(
  config: Pick<MailConfig, "domain" | "hostname" | "publicAddress" | "publicAddress6" | "dns">,
): DnsRecord[] {
  const fq = (n: string) => `${n.replace(/\.$/, "")}.`;
  const ns = fq(config.dns.nameserver);
  const records: DnsRecord[] = [
    { name: fq(config.domain), type: "NS", value: ns, at: "registrar", note: `delegates ${config.domain} to mailstack's DNS server` },
  ];
  if (ns.endsWith(`.${fq(config.domain)}`)) {
    records.push({
      name: ns,
      type: "A",
      value: config.publicAddress,
      at: "registrar",
      note: "glue: the name server lives inside the zone it serves",
    });
    if (config.publicAddress6 !== undefined)
      records.push({ name: ns, type: "AAAA", value: config.publicAddress6, at: "registrar", note: "glue (IPv6)" });
  }
  records.push({
    name: reverseName(config.publicAddress),
    type: "PTR",
    value: fq(config.hostname),
    at: "hosting provider",
    note: "reverse DNS of the public address; must match the hostname the MTA greets with",
  });
  if (config.publicAddress6 !== undefined)
    records.push({
      name: reverseName(config.publicAddress6),
      type: "PTR",
      value: fq(config.hostname),
      at: "hosting provider",
      note: "reverse DNS (IPv6)",
    });
  return records;
}

export interface EndpointInfo {
  service: ContainerService;
  endpoint: EndpointName;
  address: string;
  port: number;
  protocol: string;
  /** e.g. `smtp://mail.lx.com:25` */
  url: string;
}

const SCHEME: Record<EndpointName, string> = {
  smtp: "smtp",
  submission: "smtp+starttls",
  smtps: "smtps",
  pop3: "pop3",
  pop3s: "pop3s",
  imap: "imap",
  imaps: "imaps",
  dns: "dns",
};

/** Every listener, with the URL a client would use (the hostname for wildcard and public addresses). */
export function endpointList(config: Pick<MailConfig, "listen" | "hostname" | "publicAddress">): EndpointInfo[] {
  const out: EndpointInfo[] = [];
  for (const service of CONTAINER_SERVICES)
    for (const e of serviceEndpoints(config, service)) {
      const host =
        e.address === "0.0.0.0" || e.address === "::" || e.address === config.publicAddress
          ? config.hostname
          : e.address.includes(":")
            ? `[${e.address}]`
            : e.address;
      out.push({
        service,
        endpoint: e.name,
        address: e.address,
        port: e.port,
        protocol: e.protocols.join("+"),
        url: `${SCHEME[e.name]}://${host}:${e.port}`,
      });
    }
  return out;
}
