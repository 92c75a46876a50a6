// Opens an evidence package's report.html in headless Chromium and says what a reader's
// browser did: every request made (the page's own file:// URL is the only one expected),
// console errors and uncaught exceptions, the charts' bars (each SVG `.bar` element's
// data attributes), a full-page screenshot and, printed to PDF, the page count.
//
// Usage: node open-report.mjs REPORT.html SCREENSHOT.png PRINTED.pdf
// Needs KEYTURN_PLAYWRIGHT_DIR (a node_modules holding playwright-core) and
// KEYTURN_CHROMIUM (the browser's executable). Prints one JSON object on stdout.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [report, screenshot, printed] = process.argv.slice(2);
if (!report || !screenshot || !printed) {
  console.error('usage: node open-report.mjs REPORT.html SCREENSHOT.png PRINTED.pdf');
  process.exit(2);
}
const require = createRequire(join(process.env.KEYTURN_PLAYWRIGHT_DIR, 'node_modules', 'x.js'));
const { chromium } = require('playwright-core');

// Without the background-networking flags Chromium reaches out on its own (and fails on
// a closed network); a fresh profile keeps earlier runs out of it.
const profile = mkdtempSync(join(tmpdir(), 'keyturn-report-'));
// (Playwright passes the profile as --user-data-dir.)
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.KEYTURN_CHROMIUM,
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 1100, height: 900 },
  // The report must read without a script: none runs.
  javaScriptEnabled: false,
});
const result = { url: pathToFileURL(report).href, requests: [], console_errors: [], page_errors: [], bars: [] };
try {
  const page = context.pages()[0] ?? await context.newPage();
  // Every request is recorded, and none but the page itself is let through.
  page.on('request', (request) => result.requests.push(request.url()));
  await context.route('**/*', (route) =>
    route.request().url() === result.url ? route.continue() : route.abort());
  page.on('console', (message) => {
    if (message.type() === 'error') result.console_errors.push(message.text());
  });
  page.on('pageerror', (error) => result.page_errors.push(String(error)));
  await page.goto(result.url, { waitUntil: 'load' });
  result.title = await page.title();
  result.bars = await page.$$eval('[data-series].bar', (nodes) =>
    nodes.map((n) => ({
      series: n.getAttribute('data-series'),
      label: n.getAttribute('data-label'),
      value: n.getAttribute('data-value'),
      rects: n.querySelectorAll('rect').length,
      drawn: n.getBoundingClientRect().width > 0,
    })));
  result.charts = await page.$$eval('svg.chart[data-chart]', (nodes) => nodes.map((n) => n.getAttribute('data-chart')));
  result.scripts = await page.$$eval('script', (nodes) => nodes.length);
  result.text = await page.evaluate(() => document.body.innerText).catch(() => null);
  await page.screenshot({ path: screenshot, fullPage: true });
  await page.emulateMedia({ media: 'print' });
  await page.pdf({ path: printed, format: 'A4', printBackground: true });
  const pdf = readFileSync(printed, 'latin1');
  result.pdf_pages = (pdf.match(/\/Type\s*\/Page(?![s\w])/g) || []).length;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(result));
