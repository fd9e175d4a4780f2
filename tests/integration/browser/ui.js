// Drives Tessera's web UI (/ui/) in Debian's chromium through puppeteer-core,
// with real clicks and key presses: node ui.js <scenario> <json arguments>.
// Prints one JSON line: what the page showed. Screenshots of each page go to
// args.shots (test artefacts, not committed).
'use strict';
const fs = require('fs');
const path = require('path');
const puppeteer = require('puppeteer-core');

const T = 60000;

async function text(page, sel) {
  return page.$eval(sel, (el) => el.innerText.trim());
}

async function shot(page, args, name) {
  if (!args.shots) return;
  fs.mkdirSync(args.shots, { recursive: true });
  await page.screenshot({ path: path.join(args.shots, name + '.png'), fullPage: true });
}

async function tableRows(page, sel = 'main table tbody tr') {
  return page.$$eval(sel, (trs) => trs.map((tr) => [...tr.cells].map((td) => td.innerText.trim())));
}

// Waits until the hash-routed page shows sel after a click.
async function clickAndWait(page, clickSel, waitSel) {
  await page.click(clickSel);
  await page.waitForSelector(waitSel, { timeout: T });
}

// The first image drawn, seen from inside the page: at each of cornerstone3D's
// CORNERSTONE_IMAGE_RENDERED events (dispatched on the viewport element once
// the image is copied into its 2D canvas; caught here in the capture phase),
// the middle of that canvas is read; the first time it has more than 20 grey
// levels is kept in window.__tsFirstImage (ms since the epoch). Reading at the
// events, not at every frame, keeps the probe from slowing what it measures.
function watchFirstImage() {
  window.addEventListener('CORNERSTONE_IMAGE_RENDERED', (e) => {
    if (window.__tsFirstImage) return;
    const c = e.target.querySelector && e.target.querySelector('canvas.cornerstone-canvas');
    const ctx = c && c.width >= 10 && c.getContext('2d');
    if (!ctx) return;
    const d = ctx.getImageData(c.width / 4, c.height / 4, c.width / 2, c.height / 2).data;
    const seen = new Set();
    for (let i = 0; i < d.length; i += 4) seen.add(d[i]);
    if (seen.size > 20) window.__tsFirstImage = performance.timeOrigin + performance.now();
  }, true);
}

// a study row's OHIF link: OHIF's study viewer until its canvas shows the
// image; then a screenshot of the viewport read back confirms it
async function ohifOnce(page, args) {
  await page.goto(args.base + '/ui/#/?PatientName=' + encodeURIComponent(args.name) + '&page=0',
    { waitUntil: 'networkidle0' });
  await page.waitForSelector('a.ohif', { timeout: T });
  const out = { href: await page.$eval('a.ohif', (a) => a.getAttribute('href')) };
  // args.identity: no gzip asked for (the answers as before rest sent gzip)
  await page.setExtraHTTPHeaders(args.identity ? { 'Accept-Encoding': 'identity' } : {});
  const watch = await page.evaluateOnNewDocument(watchFirstImage);
  const t0 = Date.now();
  // when the first request of each kind went out, and when the last answer came
  out.marks = {};
  const kinds = [['bundle', /app\.bundle/], ['qido', /dicom-web\/studies\?/], ['metadata', /\/metadata/],
    ['frame', /\/frames\//]];
  const started = new Map();
  if (args.trace) out.trace = [];
  // what went over the network (not from the browser's cache): [status, path]
  out.network = [];
  const onRequest = (r) => {
    for (const [k, re] of kinds) if (re.test(r.url()) && !(k in out.marks)) out.marks[k] = Date.now() - t0;
    started.set(r, Date.now() - t0);
  };
  const onFinished = (r) => {
    const resp = r.response();
    // (puppeteer never marks the workers' scripts as from the cache: rest's log
    // tells what really went out)
    if (resp && !resp.fromCache() && /^http/.test(r.url())) out.network.push([resp.status(), new URL(r.url()).pathname]);
    if (args.trace) {
      out.trace.push([started.get(r), Date.now() - t0, new URL(r.url()).pathname.slice(0, 80),
        resp && resp.headers()['content-length'], resp && resp.headers()['content-encoding']]);
    }
    if (/\/metadata/.test(r.url())) out.marks.metadataDone = Date.now() - t0;
    if (/\/frames\//.test(r.url()) && !('frameDone' in out.marks)) out.marks.frameDone = Date.now() - t0;
  };
  page.on('request', onRequest);
  page.on('requestfinished', onFinished);
  // the link is a full navigation (/ui/ -> /viewer/): wait for it, or the first
  // look for a canvas runs in the page that is going away
  await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded', timeout: T }),
    page.click('a.ohif')]);
  const levels = async () => {
    const c = await page.$('canvas.cornerstone-canvas');
    if (!c) return 0;
    const b = await c.boundingBox();
    if (!b || b.width < 10) return 0;
    // the middle of the viewport: the image, not the overlays in its corners
    const box = { x: b.x + b.width / 4, y: b.y + b.height / 4, width: b.width / 2, height: b.height / 2 };
    const b64 = await page.screenshot({ encoding: 'base64', clip: box });
    return page.evaluate(async (b64) => {
      const img = new Image();
      img.src = 'data:image/png;base64,' + b64;
      await img.decode();
      const c = document.createElement('canvas');
      c.width = img.width; c.height = img.height;
      const ctx = c.getContext('2d');
      ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      const seen = new Set();
      for (let i = 0; i < d.length; i += 4) seen.add(d[i]);
      return seen.size;
    }, b64);
  };
  // wait for the page's own mark of the first image (a cheap look every 50
  // ms: screenshots while OHIF loads would slow what is measured), then read
  // the viewport back from a screenshot to confirm it; OHIF's router may still
  // replace its document at the start: look again
  const seen = async (what) => {
    try {
      return await what();
    } catch (e) {
      if (!/Execution context was destroyed|detached|Cannot find context/.test(String(e))) throw e;
      return 0;
    }
  };
  const end = Date.now() + T;
  let drawnAt = 0;
  while (Date.now() < end && !drawnAt) {
    drawnAt = await seen(() => page.evaluate(() => window.__tsFirstImage || 0));
    if (!drawnAt) await new Promise((r) => setTimeout(r, 50));
  }
  out.markMs = Date.now() - t0;
  out.levels = 0;
  for (const stop = Date.now() + 15000; Date.now() < stop;) {
    out.levels = await seen(levels);
    if (out.levels > 20) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  // the first image drawn, as the page timed it: at cornerstone's render
  // event, the image just copied into the viewport's canvas; the screenshot's
  // time when the page saw none (its canvas not a 2D one)
  out.screenshotMs = Date.now() - t0;
  await page.removeScriptToEvaluateOnNewDocument(watch.identifier);
  out.firstImageMs = drawnAt ? Math.round(drawnAt - t0) : out.screenshotMs;
  out.inPage = Boolean(drawnAt);
  out.url = page.url();
  // the page's own view of its first DICOMweb requests (Resource Timing, ms from
  // the viewer's navigation): path, start, request sent, first byte, last byte.
  // Request sent to last byte is Tessera's part (and loopback's); the gaps
  // between the requests are OHIF's own work in the browser.
  out.timing = await page.evaluate(() => performance.getEntriesByType('resource')
    .filter((e) => /dicom-web/.test(e.name)).slice(0, 10)
    .map((e) => [e.name.replace(/^.*dicom-web/, ''), ...[e.startTime, e.requestStart, e.responseStart, e.responseEnd].map(Math.round)]));
  page.off('request', onRequest);
  page.off('requestfinished', onFinished);
  await shot(page, args, 'ohif');
  return out;
}

const scenarios = {
  // search -> study -> series -> instance -> viewer
  async browse(page, args) {
    const out = {};
    const resp = await page.goto(args.base + '/', { waitUntil: 'networkidle0' });
    out.landed = new URL(page.url()).pathname;
    out.status = resp.status();
    await page.waitForSelector('form.search');
    await page.type('input[name=PatientName]', args.name);
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('#result-count') &&
      location.hash.includes('PatientName'), { timeout: T });
    out.search = await tableRows(page);
    out.count = await text(page, '#result-count');
    await shot(page, args, '1-search');
    // keyboard: tab into the first row's link, Enter opens the study
    await page.focus('main table tbody tr:first-child a');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => location.hash.startsWith('#/study/') && document.querySelector('main h2 + .tablewrap'), { timeout: T });
    out.studyHeadings = await page.$$eval('main h2', (hs) => hs.map((x) => x.innerText));
    out.series = await tableRows(page);
    // arrow keys move between the rows of a table
    await page.focus('main table tbody tr:first-child td:first-child a');
    await page.keyboard.press('ArrowDown');
    out.focusAfterDown = await page.evaluate(() => document.activeElement.closest('tr').rowIndex);
    await page.keyboard.press('ArrowUp');
    out.focusAfterUp = await page.evaluate(() => document.activeElement.closest('tr').rowIndex);
    await shot(page, args, '2-study');
    await clickAndWait(page, 'main table tbody tr:first-child td:first-child a', 'main table tbody tr');
    await page.waitForFunction(() => location.hash.startsWith('#/series/'), { timeout: T });
    out.instances = await tableRows(page);
    await shot(page, args, '3-series');
    await page.click('main table tbody tr:first-child td:first-child a');
    await page.waitForSelector('#preview-image, #preview-placeholder', { timeout: T });
    out.tagsText = await text(page, 'ul.tree');
    // a sequence is a closed tree node until opened
    out.sequence = await page.$eval('ul.tree details summary', (s) => s.innerText);
    await page.click('ul.tree details summary');
    out.sequenceOpen = await text(page, 'ul.tree details[open] ol');
    out.preview = await page.$eval('#preview-image, #preview-placeholder', (el) => ({ id: el.id, text: el.innerText || '', w: el.naturalWidth || 0 }));
    await shot(page, args, '4-instance');
    // the viewer: first image drawn, then the next one with the down arrow
    await page.click('.actions a[href^="#/viewer/"]');
    await page.waitForSelector('#viewer-canvas[data-ready]', { timeout: T });
    const pixels = () => page.$eval('#viewer-canvas', (c) => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const seen = new Set();
      for (let i = 0; i < d.length; i += 4) seen.add(d[i]);
      return { w: c.width, h: c.height, levels: seen.size, hidden: c.hidden };
    });
    out.viewer = await pixels();
    out.viewerPos = await text(page, '#viewer-pos');
    out.window = [await page.$eval('#viewer-wc', (e) => e.value), await page.$eval('#viewer-ww', (e) => e.value)];
    await page.focus('#viewer-canvas');
    await page.keyboard.press('ArrowDown');
    await page.waitForFunction(() => document.querySelector('#viewer-pos').innerText.startsWith('2 /'), { timeout: T });
    out.viewerPos2 = await text(page, '#viewer-pos');
    // drag to the right: a wider window
    const box = await (await page.$('#viewer-canvas')).boundingBox();
    await page.mouse.move(box.x + 10, box.y + 10);
    await page.mouse.down();
    await page.mouse.move(box.x + 60, box.y + 10, { steps: 5 });
    await page.mouse.up();
    out.window2 = [await page.$eval('#viewer-wc', (e) => e.value), await page.$eval('#viewer-ww', (e) => e.value)];
    await shot(page, args, '5-viewer');
    return out;
  },

  // drop files on the upload zone (a DataTransfer built from their bytes, as a
  // drop from the desktop delivers it) and read the summary
  async upload(page, args) {
    await page.goto(args.base + '/ui/#/upload', { waitUntil: 'networkidle0' });
    await page.waitForSelector('#drop');
    const files = args.files.map((f) => ({ name: path.basename(f), b64: fs.readFileSync(f).toString('base64') }));
    await page.$eval('#drop', (zone, files) => {
      const dt = new DataTransfer();
      for (const f of files) {
        const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
        dt.items.add(new File([bytes], f.name, { type: 'application/dicom' }));
      }
      zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, files);
    await page.waitForSelector('#upload-summary[data-done]', { timeout: T });
    const out = { summary: await text(page, '#upload-summary'), rows: await tableRows(page),
      progress: await page.$$eval('table.files progress', (ps) => ps.map((p) => p.value)) };
    await shot(page, args, 'upload');
    return out;
  },

  // choose a folder (its files and subfolders) with the folder input
  async uploadFolder(page, args) {
    await page.goto(args.base + '/ui/#/upload', { waitUntil: 'networkidle0' });
    const input = await page.waitForSelector('#pick-folder');
    await input.uploadFile(args.folder);
    await page.waitForSelector('#upload-summary[data-done]', { timeout: T });
    const out = { summary: await text(page, '#upload-summary'), rows: await tableRows(page) };
    await shot(page, args, 'upload-folder');
    return out;
  },

  // drop folders and files from the disk on the drop zone: chromium's own drag
  // and drop (CDP Input.dispatchDragEvent with file paths, as the desktop hands
  // them over), so the page gets real FileSystemEntry objects, directories
  // included, and walks them
  async dropFolder(page, args) {
    await page.goto(args.base + '/ui/#/upload', { waitUntil: 'networkidle0' });
    const zone = await page.waitForSelector('#drop');
    const b = await zone.boundingBox();
    const at = { x: b.x + b.width / 2, y: b.y + b.height / 2 };
    const cdp = await page.createCDPSession();
    const data = { items: [], files: args.paths, dragOperationsMask: 1 };
    for (const type of ['dragEnter', 'dragOver', 'drop']) {
      await cdp.send('Input.dispatchDragEvent', { type, ...at, data });
    }
    await page.waitForSelector('#upload-summary[data-done]', { timeout: T });
    const out = { summary: await text(page, '#upload-summary'), rows: await tableRows(page) };
    await shot(page, args, 'drop-folder');
    return out;
  },

  // delete a study through its page and the confirmation dialog
  async delete(page, args) {
    await page.goto(args.base + '/ui/#/study/' + args.study, { waitUntil: 'networkidle0' });
    await page.waitForSelector('button.danger');
    await page.click('button.danger');
    await page.waitForSelector('dialog[open]');
    const out = { question: await text(page, 'dialog[open]') };
    await shot(page, args, 'delete-confirm');
    // Escape cancels: nothing is deleted
    await page.keyboard.press('Escape');
    await page.waitForFunction(() => !document.querySelector('dialog'));
    out.afterEscape = new URL(page.url()).hash;
    await page.click('button.danger');
    await page.waitForSelector('dialog[open]');
    await page.click('dialog[open] button.danger');
    await page.waitForFunction(() => location.hash.startsWith('#/patient/') ||
      document.querySelector('#status.error'), { timeout: T });
    out.status = await text(page, '#status');
    out.hash = new URL(page.url()).hash;
    return out;
  },

  // send a study to a modality, follow the job, then see it on the jobs page
  async send(page, args) {
    if (args.user) await page.authenticate({ username: args.user, password: args.password });
    await page.goto(args.base + '/ui/#/study/' + args.study, { waitUntil: 'networkidle0' });
    await page.waitForFunction(() => [...document.querySelectorAll('#send-target option')].some((o) => o.value.startsWith('modalities/')), { timeout: T });
    await page.select('#send-target', 'modalities/' + args.modality);
    await page.click('form.send button[type=submit]');
    const seen = new Set();
    const end = Date.now() + T;
    for (;;) {
      const s = await page.$eval('.send-result', (el) => el.innerText).catch(() => '');
      seen.add(s.replace(/\s+/g, ' ').trim());
      if (/Success|Failure/.test(s) || Date.now() > end) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const out = { seen: [...seen].filter(Boolean) };
    await shot(page, args, 'send');
    await page.click('header nav a[href="#/jobs"]');
    await page.waitForSelector('#jobs table tbody tr', { timeout: T });
    out.jobs = await tableRows(page, '#jobs table tbody tr');
    await shot(page, args, 'jobs');
    return out;
  },

  // every study, 25 a page: Next and Previous; the time from opening /ui/ to the
  // first results; no horizontal scrolling at the viewport given
  async paging(page, args) {
    const t0 = Date.now();
    await page.goto(args.base + '/ui/', { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#result-count', { timeout: T });
    const out = { firstResultsMs: Date.now() - t0, page1: (await tableRows(page)).length,
      count1: await text(page, '#result-count') };
    const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    // every form control of the page has a label (its own <label> or aria-label)
    const unlabelled = () => page.$$eval('input, select, textarea', (els) => els
      .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map((e) => e.outerHTML));
    out.unlabelled = await unlabelled();
    out.overflow = [await overflow()];
    await shot(page, args, 'page1');
    await page.click('.pager button:last-child');
    await page.waitForFunction(() => location.hash.includes('page=1') && document.querySelector('#result-count'), { timeout: T });
    out.page2 = (await tableRows(page)).length;
    out.count2 = await text(page, '#result-count');
    out.nextDisabled = await page.$eval('.pager button:last-child', (b) => b.disabled);
    await page.click('.pager button:first-child');
    await page.waitForFunction(() => location.hash.includes('page=0') && document.querySelector('#result-count'), { timeout: T });
    out.back = (await tableRows(page)).length;
    // the pages people open on a phone, none wider than the screen
    await page.click('main table tbody tr:first-child a');
    await page.waitForSelector('main h2 + .tablewrap', { timeout: T });
    out.overflow.push(await overflow());
    out.unlabelled.push(...await unlabelled());
    out.zipHref = await page.$eval('.actions a[download]', (a) => a.getAttribute('href'));
    out.zipMagic = await page.$eval('.actions a[download]', async (a) => {
      const b = new Uint8Array(await (await fetch(a.href)).arrayBuffer());
      return String.fromCharCode(b[0], b[1]) + ' ' + b.length;
    });
    await shot(page, args, 'study');
    for (const where of ['#/upload', '#/jobs', '#/system']) {
      await page.click(`header nav a[href="${where}"]`);
      await page.waitForSelector('main h1', { timeout: T });
      await new Promise((r) => setTimeout(r, 300));
      out.overflow.push(await overflow());
      out.unlabelled.push(...await unlabelled());
      await shot(page, args, where.slice(2));
    }
    return out;
  },

  // OHIF from the study row's link; with args.warm, a second time from the
  // search page, with the browser's cache as the first visit left it (a user
  // who opened a study before: the bundles are cached, index.html revalidated);
  // with args.hot, a third time
  async ohif(page, args) {
    const out = await ohifOnce(page, args);
    if (args.warm) out.warm = await ohifOnce(page, { ...args, shots: args.shots && args.shots + '-warm' });
    // a third visit: chromium keeps V8's compiled code of a script it ran twice
    // from its cache, so from here on the bundles are not compiled again
    if (args.hot) out.hot = await ohifOnce(page, { ...args, shots: args.shots && args.shots + '-hot' });
    return out;
  },

  // bench/ui-search: for each hash, args.runs loads of /ui/ from scratch (a new
  // page, no cache), ms from navigation start to the search results shown
  async timing(page, args) {
    const out = {};
    await page.setCacheEnabled(false);
    for (const hash of args.hashes) {
      out[hash] = [];
      for (let i = 0; i < args.runs; i++) {
        await page.goto('about:blank');
        const t0 = Date.now();
        await page.goto(args.base + '/ui/' + hash, { waitUntil: 'domcontentloaded' });
        await page.waitForSelector('#result-count', { timeout: T });
        out[hash].push(Date.now() - t0);
        out[hash + ' rows'] = (await tableRows(page)).length;
      }
    }
    await shot(page, args, 'timing');
    return out;
  },

  // signed in, then the credentials stop working (a password changed): the next
  // call shows the sign-in message, not a blank page
  async expired(page, args) {
    const basic = (p) => 'Basic ' + Buffer.from(args.user + ':' + p).toString('base64');
    await page.setExtraHTTPHeaders({ Authorization: basic(args.password) });
    await page.goto(args.base + '/ui/', { waitUntil: 'networkidle0' });
    await page.waitForSelector('#result-count', { timeout: T });
    await page.setExtraHTTPHeaders({ Authorization: basic('not-the-password') });
    await page.click('form.search button[type=submit]');
    await page.waitForSelector('main [role=alert]', { timeout: T });
    const out = { alert: await text(page, 'main [role=alert]') };
    await shot(page, args, 'expired');
    return out;
  },

  // the jobs page's buttons on one job: each click, then the state it reached
  async jobcontrol(page, args) {
    await page.goto(args.base + '/ui/#/jobs', { waitUntil: 'networkidle0' });
    const out = { steps: [] };
    const state = () => page.$eval('#jobs tbody tr:first-child td:nth-child(3)', (td) => td.innerText.trim());
    for (const [action, want] of args.steps) {
      const sel = `#jobs tbody tr:first-child button[data-key$="${action}"]`;
      await page.waitForSelector(sel, { timeout: T });
      await page.click(sel);
      await page.waitForFunction((w) => {
        const td = document.querySelector('#jobs tbody tr:first-child td:nth-child(3)');
        return td && new RegExp(w).test(td.innerText.trim());
      }, { timeout: T }, want);
      out.steps.push([action, await state()]);
    }
    out.row = (await tableRows(page, '#jobs table tbody tr'))[0];
    await shot(page, args, 'jobcontrol');
    return out;
  },

  // system page
  async system(page, args) {
    await page.goto(args.base + '/ui/#/system', { waitUntil: 'networkidle0' });
    await page.waitForSelector('main .two');
    const out = { text: await text(page, 'main') };
    await shot(page, args, 'system');
    return out;
  },

  // the system page's list of service processes; with args.downPid, until the
  // page (which refreshes itself) shows that process as down
  async services(page, args) {
    await page.goto(args.base + '/ui/#/system', { waitUntil: 'networkidle0' });
    await page.waitForSelector('#services table', { timeout: T });
    const out = { rows: await tableRows(page, '#services table tbody tr'),
      count: await text(page, '#services-count') };
    await shot(page, args, 'services');
    if (args.downPid) {
      const t0 = Date.now();
      await page.waitForFunction((pid) => [...document.querySelectorAll('#services table tbody tr')]
        .some((tr) => tr.cells[3].innerText.trim() === String(pid) && tr.cells[1].innerText.trim() === 'down'),
      { timeout: T, polling: 200 }, args.downPid);
      out.downAfterMs = Date.now() - t0;
      out.rowsAfter = await tableRows(page, '#services table tbody tr');
      out.countAfter = await text(page, '#services-count');
      await shot(page, args, 'services-down');
    }
    return out;
  },

  // with Basic auth on: refused without credentials (the UI's own files too),
  // working once signed in
  async auth(page, args) {
    const out = {};
    // headless chromium has no one to ask: it gives up on the Basic challenge
    try {
      const resp = await page.goto(args.base + '/ui/', { waitUntil: 'load' });
      out.without = String(resp.status());
    } catch (e) {
      out.without = String(e.message);
    }
    await page.authenticate({ username: args.user, password: args.password });
    const resp = await page.goto(args.base + '/ui/', { waitUntil: 'networkidle0' });
    out.withStatus = resp.status();
    await page.waitForSelector('#result-count', { timeout: T });
    out.count = await text(page, '#result-count');
    out.rows = await tableRows(page);
    await shot(page, args, 'auth');
    return out;
  },
};

async function main() {
  const [name, json] = process.argv.slice(2);
  const args = JSON.parse(json);
  const browser = await puppeteer.launch({
    executablePath: '/usr/bin/chromium',
    headless: 'new',
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  const errors = [];
  try {
    const page = await browser.newPage();
    await page.setViewport(args.viewport || { width: 1280, height: 800 });
    page.on('pageerror', (e) => errors.push(String(e)));
    // failed requests are reported by URL (chromium's console line names none)
    const failed = [];
    page.on('response', (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${new URL(r.url()).pathname}`); });
    page.on('console', (m) => {
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
    });
    const result = await scenarios[name](page, args);
    result.errors = errors;
    result.failed = failed;
    process.stdout.write(JSON.stringify(result) + '\n');
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ fatal: String(e && e.stack || e) }) + '\n');
  process.exit(1);
});
