/**
 * Delivery status notifications (RFC 3464, multipart/report of RFC 6522): a human-readable part,
 * a message/delivery-status part with one block per failed recipient, and the original message's
 * headers as text/rfc822-headers. Sent from MAILER-DAEMON with a null envelope sender (RFC 5321
 * §4.5.5), marked `Auto-Submitted: auto-replied` (RFC 3834).
 */
import { randomBytes } from "node:crypto";
import { splitMessage } from "./mime";
import type { RecipientState } from "./spool";

export interface DsnInput {
  /** Our host name (Reporting-MTA, the From: domain). */
  reportingMta: string;
  queueId: string;
  /** The original envelope sender (the DSN's recipient). */
  sender: string;
  arrival: Date;
  /** The original message (only its headers are returned). */
  original: Buffer;
  failed: RecipientState[];
  receivedFrom?: string;
  now?: Date;
}

/** RFC 5322 date-time, e.g. `Tue, 4 Mar 2025 10:11:12 +0000`. */
export function rfc5322Date(d: Date): string {
  const days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
  const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const p = (n: number) => String(n).padStart(2, "0");
  return `${days[d.getUTCDay()]}, ${d.getUTCDate()} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

/** Keeps a header field value on one line, as DSN fields must be. */
function field(s: string): string {
  return s.replace(/[\r\n]+/g, " ").trim();
}

export function buildDsn(input: DsnInput): Buffer {
  const now = input.now ?? new Date();
  const boundary = `${input.queueId}.${randomBytes(6).toString("hex")}/${input.reportingMta}`;
  const expired = input.failed.some((r) => r.dsnStatus === "4.4.7" || r.dsnStatus?.startsWith("4.4.7"));
  const { head } = splitMessage(input.original);

  const human: string[] = [
    `This is the mail system at host ${input.reportingMta}.`,
    "",
    expired
      ? "Your message could not be delivered within the time the mail system keeps trying. It has been returned to you."
      : "I'm sorry to have to inform you that your message could not be delivered to one or more recipients. It's attached below.",
    "",
    "For further assistance, please send mail to postmaster.",
    "",
    "If you do so, please include this problem report. You can delete your own text from the attached returned message.",
    "",
    "                   The mail system",
    "",
  ];
  for (const r of input.failed) {
    const where = r.remoteMta && r.diagnosticType === "smtp" ? ` host ${r.remoteMta} said: ` : ": ";
    human.push(`<${r.address}>${where}${field(r.diagnostic ?? r.dsnStatus ?? "delivery failed")}`);
  }

  const status: string[] = [`Reporting-MTA: dns; ${input.reportingMta}`, `X-Mailstack-Queue-ID: ${input.queueId}`];
  if (input.receivedFrom) status.push(`Received-From-MTA: dns; ${field(input.receivedFrom)}`);
  status.push(`Arrival-Date: ${rfc5322Date(input.arrival)}`);
  for (const r of input.failed) {
    status.push("");
    status.push(`Final-Recipient: rfc822; ${r.address}`);
    if (r.orcpt && r.orcpt.toLowerCase() !== r.address.toLowerCase()) status.push(`Original-Recipient: rfc822; ${r.orcpt}`);
    status.push("Action: failed");
    // Status is a 5.x.x code; an expiry is reported as 4.4.7 per RFC 3463 (persistent transient).
    status.push(`Status: ${r.dsnStatus ?? "5.0.0"}`);
    if (r.remoteMta) status.push(`Remote-MTA: dns; ${r.remoteMta}`);
    status.push(`Diagnostic-Code: ${r.diagnosticType === "smtp" ? "smtp" : "X-Mailstack"}; ${field(r.diagnostic ?? "delivery failed")}`);
    if (r.updated) status.push(`Last-Attempt-Date: ${rfc5322Date(new Date(r.updated))}`);
  }

  const headers = [
    `From: Mail Delivery System <MAILER-DAEMON@${input.reportingMta}>`,
    `To: ${input.sender}`,
    `Subject: ${expired ? "Undelivered Mail Returned to Sender (delivery time expired)" : "Undelivered Mail Returned to Sender"}`,
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${input.queueId}.${now.getTime()}@${input.reportingMta}>`,
    "Auto-Submitted: auto-replied",
    "MIME-Version: 1.0",
    `Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="${boundary}"`,
    "Content-Transfer-Encoding: 8bit",
  ];

  const parts = [
    headers.join("\r\n"),
    "",
    "This is a MIME-encapsulated message.",
    "",
    `--${boundary}`,
    "Content-Description: Notification",
    "Content-Type: text/plain; charset=utf-8",
    "",
    human.join("\r\n"),
    "",
    `--${boundary}`,
    "Content-Description: Delivery report",
    "Content-Type: message/delivery-status",
    "",
    status.join("\r\n"),
    "",
    `--${boundary}`,
    "Content-Description: Undelivered Message Headers",
    "Content-Type: text/rfc822-headers",
    "",
  ].join("\r\n");
  const origHead = head.toString("latin1").replace(/\r?\n/g, "\r\n");
  return Buffer.concat([
    Buffer.from(`${parts}\r\n`, "utf8"),
    Buffer.from(origHead.endsWith("\r\n") ? origHead : `${origHead}\r\n`, "latin1"),
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
}
