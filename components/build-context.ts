/**
 * The image's build context as Docker sees it (the repository minus .dockerignore), and a digest
 * of it. MailImage tags the image with the digest, so the image is rebuilt exactly when a file
 * that goes into it changes, and is never `:latest`.
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import * as path from "node:path";

export interface ContextFile {
  /** Path relative to the context root, with `/` separators. */
  path: string;
  content: Buffer;
  executable: boolean;
}

/** A .dockerignore matcher (Go filepath.Match patterns plus `**`, `!` exceptions; last match wins). */
export function dockerignoreMatcher(text: string): (relPath: string) => boolean {
  const rules = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => {
      const negate = l.startsWith("!");
      const pattern = path.posix
        .normalize((negate ? l.slice(1) : l).trim())
        .replace(/^\/+/, "")
        .replace(/\/+$/, "");
      return { negate, re: globToRegExp(pattern) };
    });
  return (relPath) => {
    // A path is excluded when it, or a directory above it, matches.
    const parts = relPath.split("/");
    let excluded = false;
    for (const rule of rules) {
      for (let i = 1; i <= parts.length; i++) {
        if (rule.re.test(parts.slice(0, i).join("/"))) {
          excluded = !rule.negate;
          break;
        }
      }
    }
    return excluded;
  };
}

function globToRegExp(pattern: string): RegExp {
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "*" && pattern[i + 1] === "*") {
      i++;
      if (pattern[i + 1] === "/") {
        i++;
        re += "(?:.*/)?";
      } else re += ".*";
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

/** sha256 over every file's path, mode and content, in path order. Pure. */
export function contextDigest(files: readonly ContextFile[]): string {
  const h = createHash("sha256");
  for (const f of [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    h.update(`${f.path}\0${f.executable ? "755" : "644"}\0${f.content.length}\0`);
    h.update(f.content);
  }
  return h.digest("hex");
}

/** The files Docker sends: those the .dockerignore text does not exclude. Pure. */
export function selectContext(files: readonly ContextFile[], dockerignore: string): ContextFile[] {
  const ignored = dockerignoreMatcher(dockerignore);
  return files.filter((f) => !ignored(f.path));
}

/** The digest MailImage tags with: of the selected files only. Pure. */
export function buildContextDigest(files: readonly ContextFile[], dockerignore: string): string {
  return contextDigest(selectContext(files, dockerignore));
}

/** Reads the context from disk (the one impure function here). */
export function readBuildContext(root: string): ContextFile[] {
  let ignoreText = "";
  try {
    ignoreText = readFileSync(path.join(root, ".dockerignore"), "utf8");
  } catch {
    // no .dockerignore: everything goes in
  }
  const ignored = dockerignoreMatcher(ignoreText);
  const out: ContextFile[] = [];
  const walk = (rel: string) => {
    for (const entry of readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        // Docker descends into an excluded directory only when an exception (`!dir/file`) may
        // re-include something below it.
        if (ignored(p) && !hasExceptionBelow(ignoreText, p)) continue;
        walk(p);
      } else if (entry.isFile() && !ignored(p)) {
        const abs = path.join(root, p);
        out.push({ path: p, content: readFileSync(abs), executable: (statSync(abs).mode & 0o111) !== 0 });
      }
    }
  };
  walk("");
  return out;
}

function hasExceptionBelow(ignoreText: string, dir: string): boolean {
  return ignoreText
    .split(/\r?\n/)
    .map((l) => l.trim())
    .some((l) => l.startsWith("!") && path.posix.normalize(l.slice(1).trim()).replace(/^\/+/, "").startsWith(`${dir}/`));
}
