/**
 * A copy of ../components/constants.ts (the names and numbers the policies read), so the pack is
 * self-contained: `pulumi preview --policy-pack policy` and a published pack load nothing outside
 * this folder. test/policy-selfcontained.test.ts fails if the two drift apart.
 */

/** Where each container finds its rendered config (uploaded before the container starts). */
export const CONFIG_PATH = "/etc/mailstack/config.json";
/** Where the shared data volume (Maildirs, queue, TLS material) is mounted. */
export const CONTAINER_DATA_DIR = "/var/lib/mailstack";
/** Where TLS files named by `tls.certFile`/`tls.keyFile` are mounted read-only. */
export const CONTAINER_TLS_DIR = "/etc/mailstack/tls";
/** The image's non-root user (see the Dockerfile). Owns the data directory on the host. */
export const MAILSTACK_UID = 10001;
/** A relative `dataDir` is a local-run path; on a deployed host the data lives here instead. */
export const DEFAULT_HOST_DATA_DIR = "/var/lib/mailstack";

/** Container label keys the components set and the policies read. */
export const LABEL_SERVICE = "mailstack.service";
export const LABEL_ENDPOINTS = "mailstack.endpoints";
export const LABEL_DOMAIN = "mailstack.domain";

export type ContainerService = "dns" | "smtp" | "queue" | "pop3" | "imap";
export type MailEndpointName = "smtp" | "submission" | "smtps" | "pop3" | "pop3s" | "imap" | "imaps" | "dns";

/** The services whose containers hold mail (Maildirs and the queue). */
export const MAIL_DATA_SERVICES: readonly ContainerService[] = ["smtp", "queue", "pop3", "imap"];

/** The well-known ports of every mail and DNS endpoint. */
export const WELL_KNOWN_PORTS: Readonly<Record<MailEndpointName, number>> = {
  smtp: 25,
  submission: 587,
  smtps: 465,
  pop3: 110,
  pop3s: 995,
  imap: 143,
  imaps: 993,
  dns: 53,
};

/** Endpoints where a client logs in over a connection that starts in plaintext. */
export const PLAINTEXT_LOGIN_ENDPOINTS: readonly MailEndpointName[] = ["smtp", "submission", "pop3", "imap"];
