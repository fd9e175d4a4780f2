// The search page: studies through POST /tools/find, paged with Limit/Since.
import { api, h, table, fmtDate, fmtName, errorBox, ohifServed, ohifLink } from '../app.js';

const PAGE = 25;
const FIELDS = [
  ['PatientName', 'Patient name'], ['PatientID', 'Patient ID'],
  ['AccessionNumber', 'Accession number'], ['StudyDescription', 'Study description'],
];
const MODALITIES = ['', 'CT', 'MR', 'CR', 'DX', 'US', 'PT', 'NM', 'MG', 'XA', 'RF', 'OT', 'SR', 'SEG'];

// Free text matches anywhere, as people expect; a value with its own wildcards is kept.
function contains(v) { return /[*?]/.test(v) ? v : `*${v}*`; }

export async function searchPage(page) {
  const p = page.params;
  const form = h('form', { class: 'search', role: 'search', 'aria-label': 'Studies' },
    FIELDS.map(([name, label]) => h('label', {}, label,
      h('input', { name, value: p.get(name) || '', type: 'search', autocomplete: 'off' }))),
    h('label', {}, 'Study date from', h('input', { name: 'from', type: 'date', value: p.get('from') || '' })),
    h('label', {}, 'Study date to', h('input', { name: 'to', type: 'date', value: p.get('to') || '' })),
    h('label', {}, 'Modality', h('select', { name: 'ModalitiesInStudy' },
      MODALITIES.map((m) => h('option', { value: m, selected: m === (p.get('ModalitiesInStudy') || '') }, m || 'any')))),
    h('button', { class: 'primary', type: 'submit' }, 'Search'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    q.set('page', '0');
    const next = '#/?' + q;
    if (location.hash === next) searchPage(page); else location.hash = next;
  });
  const results = h('section', { 'aria-label': 'Results' });
  page.main.replaceChildren(h('h1', {}, 'Studies'), form, results);

  const query = {};
  for (const [name] of FIELDS) if (p.get(name)) query[name] = contains(p.get(name));
  if (p.get('ModalitiesInStudy')) query.ModalitiesInStudy = p.get('ModalitiesInStudy');
  const from = (p.get('from') || '').replaceAll('-', ''), to = (p.get('to') || '').replaceAll('-', '');
  if (from || to) query.StudyDate = from === to ? from : `${from}-${to}`;
  const n = Math.max(0, parseInt(p.get('page') || '0', 10) || 0);
  results.replaceChildren(h('p', {}, 'Searching…'));
  let studies;
  try {
    // one more than a page tells whether there is a next one
    studies = await api('POST', 'tools/find', { Level: 'Study', Query: query, Expand: true,
      Limit: PAGE + 1, Since: n * PAGE, RequestedTags: ['ModalitiesInStudy'] });
  } catch (e) {
    results.replaceChildren(errorBox(e));
    return;
  }
  const more = studies.length > PAGE;
  studies = studies.slice(0, PAGE);
  const go = (k) => { p.set('page', String(k)); location.hash = '#/?' + p; };
  results.replaceChildren(
    h('p', { id: 'result-count' }, studies.length === 0 ? 'No study matches.'
      : `Studies ${n * PAGE + 1}–${n * PAGE + studies.length}${more ? ' (more on the next page)' : ''}`),
    studies.length ? studyTable(studies, await ohifServed()) : '',
    h('div', { class: 'pager' },
      h('button', { type: 'button', disabled: n === 0, onclick: () => go(n - 1) }, 'Previous page'),
      h('span', {}, `Page ${n + 1}`),
      h('button', { type: 'button', disabled: !more, onclick: () => go(n + 1) }, 'Next page')));
}

export function studyTable(studies, withOhif) {
  return table([
    ['Patient', (s) => fmtName(s.PatientMainDicomTags?.PatientName)],
    ['Patient ID', (s) => s.PatientMainDicomTags?.PatientID],
    ['Date', (s) => fmtDate(s.MainDicomTags?.StudyDate)],
    ['Description', (s) => s.MainDicomTags?.StudyDescription],
    ['Modalities', (s) => (s.RequestedTags?.ModalitiesInStudy || s.MainDicomTags?.ModalitiesInStudy || '').replaceAll('\\', ', ')],
    ['Accession', (s) => s.MainDicomTags?.AccessionNumber],
    ['Series', (s) => (s.Series || []).length],
    ...(withOhif ? [['Viewer', (s) => h('a', { href: ohifLink(s.MainDicomTags?.StudyInstanceUID), class: 'ohif',
      'aria-label': 'Open study in OHIF' }, 'OHIF')]] : []),
  ], studies, (s) => '#/study/' + s.ID);
}
