// Tessera's web UI: a router over location.hash and the helpers every page uses.
// Plain ES modules, no build step: the browser loads these files as they are.
import { searchPage } from './pages/search.js';
import { patientPage, studyPage, seriesPage } from './pages/browse.js';
import { instancePage } from './pages/instance.js';
import { uploadPage } from './pages/upload.js';
import { jobsPage } from './pages/jobs.js';
import { systemPage } from './pages/system.js';
import { viewerPage } from './pages/viewer.js';

const routes = [
  [/^\/?$/, searchPage, ''],
  [/^\/patient\/([^/]+)$/, patientPage, ''],
  [/^\/study\/([^/]+)$/, studyPage, ''],
  [/^\/series\/([^/]+)$/, seriesPage, ''],
  [/^\/instance\/([^/]+)$/, instancePage, ''],
  [/^\/viewer\/([^/]+)$/, viewerPage, ''],
  [/^\/upload$/, uploadPage, '#/upload'],
  [/^\/jobs$/, jobsPage, '#/jobs'],
  [/^\/system$/, systemPage, '#/system'],
];

let cleanup = null; // the page's own timers end when another page opens
let flashed = '';   // a message for the next page (e.g. "Deleted study X.")

export function flash(text) { flashed = text; }

async function route() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query] = hash.split('?');
  const params = new URLSearchParams(query || '');
  if (cleanup) { cleanup(); cleanup = null; }
  setStatus(flashed);
  flashed = '';
  const main = document.getElementById('main');
  for (const a of document.querySelectorAll('header nav a')) {
    const here = a.getAttribute('href') === '#' + path || (path === '/' && a.getAttribute('href') === '#/');
    if (here) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  for (const [re, page] of routes) {
    const m = path.match(re);
    if (!m) continue;
    const page_ = { main, params, onLeave: (fn) => { cleanup = fn; } };
    main.replaceChildren(h('p', {}, 'Loading…'));
    try {
      await page(page_, ...m.slice(1).map(decodeURIComponent));
    } catch (e) {
      main.replaceChildren(h('h1', {}, 'Something went wrong'), errorBox(e));
    }
    main.focus({ preventScroll: true });
    return;
  }
  main.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, 'No page at ' + path + '. ',
    h('a', { href: '#/' }, 'Back to the search')));
}

// -- the REST API: paths relative to the root this UI is served under (/ui/ -> /),
// so that a reverse proxy may mount Tessera under a prefix
export const ROOT = new URL('..', location.href.split('#')[0]).pathname;

// Whether rest serves the OHIF viewer (TESSERA_VIEWER_DIR), asked once; and the
// address that opens a study in it
let ohif = null;
export function ohifServed() {
  if (!ohif) ohif = fetch(ROOT + 'viewer/app-config.js').then((r) => r.ok, () => false);
  return ohif;
}
export function ohifLink(studyUid) {
  return ROOT + 'viewer/viewer?StudyInstanceUIDs=' + encodeURIComponent(studyUid);
}

export class ApiError extends Error {
  constructor(status, body) {
    const reason = body && typeof body === 'object'
      ? (body.Details || body.Message || body.HttpError) : (body || '');
    super(status === 401 ? 'Sign-in needed (HTTP 401): reload the page to sign in again.'
      : `HTTP ${status}${reason ? ': ' + reason : ''}`);
    this.status = status;
    this.body = body;
  }
}

export async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const r = await fetch(ROOT + path, init);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

// -- DOM helpers: elements built with text nodes only, never from HTML strings
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function setStatus(text, isError) {
  const s = document.getElementById('status');
  s.textContent = text;
  s.className = isError ? 'error' : '';
}

export function errorBox(e) {
  return h('p', { class: 'error', role: 'alert' }, e && e.message ? e.message : String(e));
}

// DICOM dates and names as people read them
export function fmtDate(d) {
  return d && /^\d{8}$/.test(d) ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : (d || '');
}
export function fmtName(n) { return (n || '').replace(/\^+/g, ' ').trim(); }

// A table whose rows are reached with the arrow keys; each row's first link
// opens it (Enter), as in a list of files.
export function table(columns, rows, rowLink) {
  const body = h('tbody', {}, rows.map((r) => {
    const tr = h('tr', {}, columns.map(([, cell], i) => {
      const v = cell(r);
      return h('td', {}, i === 0 && rowLink ? h('a', { href: rowLink(r) }, v || '(none)') : v);
    }));
    return tr;
  }));
  body.addEventListener('keydown', (ev) => {
    if (ev.key !== 'ArrowDown' && ev.key !== 'ArrowUp') return;
    const tr = ev.target.closest('tr');
    const next = ev.key === 'ArrowDown' ? tr && tr.nextElementSibling : tr && tr.previousElementSibling;
    const link = next && next.querySelector('a, button');
    if (link) { link.focus(); ev.preventDefault(); }
  });
  return h('div', { class: 'tablewrap' },
    h('table', {}, h('thead', {}, h('tr', {}, columns.map(([title]) => h('th', { scope: 'col' }, title)))), body));
}

export function tagList(tags) {
  return h('dl', { class: 'tags' }, Object.entries(tags || {}).flatMap(([k, v]) => [
    h('dt', {}, k), h('dd', {}, k.endsWith('Date') ? fmtDate(v) : k === 'PatientName' ? fmtName(v) : v)]));
}

// A modal question; resolves true when confirmed.
export function confirmDialog(title, text, action) {
  return new Promise((resolve) => {
    const dlg = h('dialog', { 'aria-labelledby': 'dlg-title' },
      h('h2', { id: 'dlg-title' }, title), h('p', {}, text),
      h('div', { class: 'actions' },
        h('button', { class: 'danger', value: 'yes', onclick: () => dlg.close('yes') }, action),
        h('button', { value: 'no', autofocus: true, onclick: () => dlg.close('no') }, 'Cancel')));
    dlg.addEventListener('close', () => { dlg.remove(); resolve(dlg.returnValue === 'yes'); });
    document.body.append(dlg);
    dlg.showModal();
  });
}

window.addEventListener('hashchange', route);
route();
