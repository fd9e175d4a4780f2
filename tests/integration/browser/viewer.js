// A page of one origin that uses npm's dicomweb-client (the library OHIF uses)
// against a DICOMweb root of another origin, in Debian's chromium driven by
// puppeteer-core: node viewer.js <page url>. The page (page.html, served by the
// test) runs the calls; prints one JSON line: what the page saw.
'use strict';
const puppeteer = require('puppeteer-core');

async function main() {
  const [pageUrl] = process.argv.slice(2);
  const browser = await puppeteer.launch({
    executablePath: '/usr/bin/chromium',
    headless: 'new',
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  try {
    const page = await browser.newPage();
    const requests = [];
    page.on('request', (r) => requests.push(r.method() + ' ' + r.url()));
    const console_ = [];
    page.on('console', (m) => console_.push(m.text()));
    await page.goto(pageUrl);
    await page.waitForFunction('window.done === true', { timeout: 60000 });
    const result = await page.evaluate('window.result');
    result.console = console_;
    result.requests = requests;
    process.stdout.write(JSON.stringify(result) + '\n');
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ fatal: String(e) }) + '\n');
  process.exit(1);
});
