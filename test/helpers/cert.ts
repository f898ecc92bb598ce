/**
 * A self-signed certificate for mail.lx.com as PEM files (openssl, EC P-256, two days), for
 * services started as processes from a stack file (the fault tests, the benchmark), so that no
 * service generates its own on start. In-process tests use ./smtp `testCert` instead.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import * as path from "node:path";

/** `dir/cert.pem` and `dir/key.pem`, made unless they are there already. */
export function certFiles(dir: string): { certFile: string; keyFile: string } {
  const certFile = path.join(dir, "cert.pem");
  const keyFile = path.join(dir, "key.pem");
  if (!existsSync(certFile)) {
    mkdirSync(dir, { recursive: true });
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=mail.lx.com",
        "-keyout",
        keyFile,
        "-out",
        certFile,
      ],
      // stderr goes into the error when openssl fails.
      { stdio: ["ignore", "ignore", "pipe"] },
    );
  }
  return { certFile, keyFile };
}
