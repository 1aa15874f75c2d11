/**
 * The distribution's Chromium, launched headless the way this machine needs
 * it: no sandbox (root), no GPU, and none of the background networking that a
 * closed network refuses. Used by the end-to-end tests and the browser
 * benchmark; each caller removes `profile` when done.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export async function launchChromium(
  name: string,
  viewport?: { width: number; height: number },
): Promise<{ context: BrowserContext; profile: string }> {
  const profile = mkdtempSync(join(tmpdir(), `sodp-${name}-`));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    ...(viewport ? { viewport } : {}),
    args: ARGS,
  });
  return { context, profile };
}
