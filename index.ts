/**
 * The mailstack Pulumi program: one MailSystem for the selected stack (`stacks/Pulumi.<env>.yaml`).
 *
 *   pulumi stack select lx && pulumi up
 *
 * Config is read when the program runs (never at import of a component), validated once, and
 * handed on as a typed MailConfig: plain and redacted for deciding the graph, secret and complete
 * for the files the containers read.
 */
import { MailSystem } from "./components/mail-system";
import { readStackConfig } from "./components/stack-config";

const stackConfig = readStackConfig();
const system = new MailSystem("mailstack", {
  stack: stackConfig.stack,
  config: stackConfig.config,
  secretConfig: stackConfig.secretConfig,
  ...(stackConfig.sshPrivateKey !== undefined ? { sshPrivateKey: stackConfig.sshPrivateKey } : {}),
});

/** Every listener, with the URL a client uses. */
export const endpoints = system.endpoints;
/** NS delegation and glue for the registrar; the PTR to ask the hosting provider for. */
export const registrarRecords = system.registrarRecords;
/** The image the containers run. */
export const image = system.image.reference;
export const hostname = system.host.hostname;
