// An instance: its tags (sequences as a tree) from /instances/{id}/tags and a
// preview from /instances/{id}/preview when this server renders images.
import { api, h, ROOT, ApiError } from '../app.js';
import { deleteResource } from './actions.js';

function tagTree(tags) {
  return h('ul', { class: 'tree' }, Object.entries(tags).map(([tag, t]) => {
    const label = [h('span', { class: 'tag' }, tag), t.Name || '(private)'];
    if (t.Type === 'Sequence') {
      const items = t.Value || [];
      return h('li', {}, h('details', {}, h('summary', {}, ...label, ` (${items.length} item${items.length === 1 ? '' : 's'})`),
        h('ol', {}, items.map((item) => h('li', {}, tagTree(item))))));
    }
    const value = t.Type === 'String' ? t.Value : t.Type === 'TooLong' ? '(too long to show)'
      : t.Type === 'Null' ? '(empty)' : '(binary)';
    return h('li', {}, ...label, ': ', h('span', { class: 'value' }, value));
  }));
}

// 200: the image; 404/415 (no rendering for it, or none in this server yet): a
// placeholder that says so.
export async function previewInto(box, id) {
  box.replaceChildren('Loading preview…');
  try {
    const r = await fetch(ROOT + `instances/${id}/preview`, { headers: { Accept: 'image/png' } });
    if (r.ok) {
      const url = URL.createObjectURL(await r.blob());
      box.replaceChildren(h('img', { src: url, alt: 'Preview of the instance', id: 'preview-image' }));
      return;
    }
    if (r.status === 401) throw new ApiError(401, null);
    let why = `HTTP ${r.status}`;
    try { const b = await r.json(); why += b.Details ? ': ' + b.Details : b.Message ? ': ' + b.Message : ''; } catch { /* empty */ }
    box.replaceChildren(h('p', { id: 'preview-placeholder' },
      r.status === 404 || r.status === 415 ? `No preview for this instance (${why}).` : `Preview failed (${why}).`));
  } catch (e) {
    box.replaceChildren(h('p', { id: 'preview-placeholder' }, 'No preview: ' + e.message));
  }
}

export async function instancePage(page, id) {
  const [inst, tags] = await Promise.all([api('GET', 'instances/' + id), api('GET', `instances/${id}/tags`)]);
  const box = h('div', { class: 'preview', 'aria-live': 'polite' });
  const title = `Instance ${inst.MainDicomTags.InstanceNumber || ''}`.trim();
  page.main.replaceChildren(
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/' }, 'Search'), ' › ',
      h('a', { href: '#/series/' + inst.ParentSeries }, 'Series'), ' › ', title),
    h('h1', {}, title),
    h('div', { class: 'actions' },
      h('a', { href: ROOT + `instances/${id}/file`, download: id + '.dcm' }, 'Download DICOM file'),
      h('a', { href: '#/viewer/' + inst.ParentSeries }, 'Open series in viewer'),
      h('button', { class: 'danger', onclick: () => deleteResource('instance', id, title, '#/series/' + inst.ParentSeries) },
        'Delete instance')),
    h('div', { class: 'two' },
      h('section', {}, h('h2', {}, 'Tags'), tagTree(tags)),
      h('section', {}, h('h2', {}, 'Preview'), box)));
  previewInto(box, id);
}
