/**
 * The mailstack policy pack. Run it with a preview or an update:
 *
 *   (cd policy && npm ci) && pulumi preview --policy-pack policy
 *
 * Tests never import this file (a PolicyPack starts a gRPC server); they use ./policies directly.
 */
import { PolicyPack } from "@pulumi/policy";
import { mailstackPolicies } from "./policies";

new PolicyPack("mailstack", { policies: mailstackPolicies() });
