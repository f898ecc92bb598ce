/**
 * Libraries that only some commands need, loaded on first use. An idle IMAP process that has
 * loaded mailparser (with its HTML stack), libmime (with its charset tables) and mailsplit holds
 * about 20 MB more than one that has not; SEARCH TEXT, an encoded-word header search or the first
 * BODYSTRUCTURE pays the load once.
 */
let libmimeModule: { decodeWords(s: string): string } | undefined;
let mailparserModule: typeof import("mailparser") | undefined;
let mailsplitModule: typeof import("@zone-eu/mailsplit") | undefined;

export function libmime(): { decodeWords(s: string): string } {
  libmimeModule ??= require("libmime") as { decodeWords(s: string): string };
  return libmimeModule;
}

export function mailparser(): typeof import("mailparser") {
  mailparserModule ??= require("mailparser") as typeof import("mailparser");
  return mailparserModule;
}

export function mailsplit(): typeof import("@zone-eu/mailsplit") {
  mailsplitModule ??= require("@zone-eu/mailsplit") as typeof import("@zone-eu/mailsplit");
  return mailsplitModule;
}
