/** The SMTP service: `startSmtp(config)` runs it and returns its listeners. */
import type { MailConfig } from "../config/schema";
import type { RunningService } from "../lib/service";
import { type SmtpOptions, startSmtpServer } from "./server";

export type { OutboundQueue, ReverseResolver } from "./context";
export type { SmtpOptions } from "./server";

export async function startSmtp(config: MailConfig, opts: SmtpOptions = {}): Promise<RunningService> {
  return startSmtpServer(config, opts);
}
