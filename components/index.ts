export { MailHost, type MailHostArgs } from "./mail-host";
export { MailImage, type MailImageArgs } from "./mail-image";
export { MailSystem, type MailSystemArgs } from "./mail-system";
export { DnsService, ImapService, Pop3Service, type ServiceArgs, SmtpService } from "./services";
export { readStackConfig } from "./stack-config";
