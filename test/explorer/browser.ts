/**
 * Debian's Chromium for the explorer's browser tests, driven by playwright-core with `executablePath` (never
 * a browser download), with the flags that keep it from calling out (notes/toolchain.md "Browser tests"), a
 * fresh profile (playwright makes a temporary one per launch; it refuses --user-data-dir here), and a page that records every console error and uncaught exception.
 */
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { REPO_ROOT } from '../helpers/cli.js';

export const CHROMIUM = process.env.GRIDPIPE_CHROMIUM ?? '/usr/bin/chromium';
export const chromiumInstalled = existsSync(CHROMIUM);

/** Where screenshots go (a test artefact, gitignored). */
export const SCREENSHOTS = path.join(REPO_ROOT, 'test-results', 'explorer');

export interface TestBrowser {
  browser: Browser;
  /** A new page at a viewport size; its console errors and page errors are pushed to `errors`. */
  page(width: number, height: number): Promise<Page>;
  errors: string[];
  close(): Promise<void>;
}

export async function launchChromium(): Promise<TestBrowser> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  mkdirSync(SCREENSHOTS, { recursive: true });
  const errors: string[] = [];
  const contexts: BrowserContext[] = [];
  return {
    browser, errors,
    async page(width, height) {
      const context = await browser.newContext({ viewport: { width, height } });
      contexts.push(context);
      const page = await context.newPage();
      page.on('console', (msg) => { if (msg.type() === 'error') errors.push(`console: ${msg.text()} (${page.url()})`); });
      page.on('pageerror', (err) => errors.push(`page: ${err.message} (${page.url()})`));
      return page;
    },
    async close() {
      for (const c of contexts) await c.close().catch(() => undefined);
      await browser.close();
    },
  };
}
