// A small but real viewer of one series: the instances in order, scrolled with
// the wheel, the arrow keys or the slider; window/level by dragging (horizontal:
// width, vertical: level) or typed in. Pixels come uncompressed from
// /instances/{id}/frames/0/raw and are windowed here, on a canvas; an instance
// whose frame is not raw pixels (compressed, colour) shows the server's
// rendering (/instances/{id}/preview) without window/level, or a placeholder.
import { api, h, ROOT, fmtName } from '../app.js';

const first = (v) => parseFloat(String(v ?? '').split('\\')[0]);

async function loadFrame(id) {
  const tags = await api('GET', `instances/${id}/simplified-tags`);
  const r = await fetch(ROOT + `instances/${id}/frames/0/raw`);
  const type = r.headers.get('Content-Type') || '';
  const mono = /^MONOCHROME[12]$/.test(tags.PhotometricInterpretation || '');
  if (!r.ok || !type.startsWith('application/octet-stream') || !mono || +tags.SamplesPerPixel > 1)
    return { id, tags, raw: null };
  const buf = await r.arrayBuffer();
  const bits = +tags.BitsAllocated, signed = +tags.PixelRepresentation === 1;
  const px = bits === 16 ? (signed ? new Int16Array(buf, 0, buf.byteLength >> 1) : new Uint16Array(buf, 0, buf.byteLength >> 1))
    : bits === 8 ? new Uint8Array(buf) : null;
  if (!px) return { id, tags, raw: null };
  const slope = Number.isFinite(first(tags.RescaleSlope)) ? first(tags.RescaleSlope) : 1;
  const inter = Number.isFinite(first(tags.RescaleIntercept)) ? first(tags.RescaleIntercept) : 0;
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < px.length; i++) { const v = px[i]; if (v < lo) lo = v; if (v > hi) hi = v; }
  return { id, tags, raw: { px, w: +tags.Columns, h: +tags.Rows, slope, inter, invert: tags.PhotometricInterpretation === 'MONOCHROME1',
    lo: lo * slope + inter, hi: hi * slope + inter } };
}

export async function viewerPage(page, seriesId) {
  const [se, list] = await Promise.all([api('GET', 'series/' + seriesId), api('GET', `series/${seriesId}/instances`)]);
  list.sort((a, b) => (+a.MainDicomTags.InstanceNumber || 0) - (+b.MainDicomTags.InstanceNumber || 0));
  const st = await api('GET', 'studies/' + se.ParentStudy);
  const canvas = h('canvas', { id: 'viewer-canvas', tabindex: '0', 'aria-label': 'Image: wheel or arrow keys to scroll, drag for window/level' });
  const img = h('img', { alt: 'Rendered image', hidden: true });
  const note = h('p', { id: 'viewer-note', 'aria-live': 'polite' });
  const slider = h('input', { type: 'range', min: 1, max: Math.max(1, list.length), value: 1, id: 'viewer-slice' });
  const wc = h('input', { type: 'number', id: 'viewer-wc', step: 'any', size: 6 });
  const ww = h('input', { type: 'number', id: 'viewer-ww', step: 'any', size: 6, min: 1 });
  const pos = h('span', { id: 'viewer-pos' });
  page.main.replaceChildren(
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/' }, 'Search'), ' › ',
      h('a', { href: '#/study/' + se.ParentStudy }, fmtName(st.PatientMainDicomTags.PatientName) || 'Study'), ' › ',
      h('a', { href: '#/series/' + seriesId }, 'Series'), ' › Viewer'),
    h('h1', {}, 'Viewer: ', se.MainDicomTags.SeriesDescription || se.MainDicomTags.Modality || 'series'),
    h('div', { class: 'viewer' },
      h('div', { class: 'bar' }, h('label', {}, 'Image', slider), pos,
        h('label', {}, 'Window centre', wc), h('label', {}, 'Window width', ww),
        h('button', { type: 'button', onclick: () => { win = null; draw(); } }, 'Reset window')),
      canvas, img, note));
  if (!list.length) { note.textContent = 'This series has no instance.'; return; }

  const cache = new Map();
  const get = (i) => {
    const id = list[i].ID;
    if (!cache.has(id)) cache.set(id, loadFrame(id).catch((e) => ({ id, error: e })));
    return cache.get(id);
  };
  let index = 0, win = null, shown = null;

  function paint(f) {
    const { px, w, h: hh, slope, inter, invert } = f.raw;
    if (!win) {
      const c = first(f.tags.WindowCenter), wd = first(f.tags.WindowWidth);
      win = Number.isFinite(c) && wd > 0 ? { c, w: wd } : { c: (f.raw.lo + f.raw.hi) / 2, w: Math.max(1, f.raw.hi - f.raw.lo) };
    }
    wc.value = Math.round(win.c); ww.value = Math.round(win.w);
    canvas.width = w; canvas.height = hh;
    const ctx = canvas.getContext('2d');
    const out = ctx.createImageData(w, hh);
    const low = win.c - win.w / 2, scale = 255 / win.w;
    for (let i = 0, j = 0; i < w * hh; i++, j += 4) {
      let v = ((px[i] * slope + inter) - low) * scale;
      v = v < 0 ? 0 : v > 255 ? 255 : v;
      if (invert) v = 255 - v;
      out.data[j] = out.data[j + 1] = out.data[j + 2] = v; out.data[j + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
  }

  async function draw() {
    const i = index;
    slider.value = i + 1;
    pos.textContent = `${i + 1} / ${list.length}`;
    const f = await get(i);
    if (i !== index) return; // scrolled on meanwhile
    shown = f;
    if (f.error) { note.textContent = 'Cannot load this image: ' + f.error.message; return; }
    if (f.raw) {
      canvas.hidden = false; img.hidden = true; note.textContent = '';
      paint(f);
    } else {
      // not raw monochrome pixels: the server's own rendering, when it has one
      const r = await fetch(ROOT + `instances/${f.id}/preview`);
      if (i !== index) return;
      canvas.hidden = true;
      if (r.ok) {
        img.src = URL.createObjectURL(await r.blob()); img.hidden = false;
        note.textContent = 'Rendered by the server (window/level not adjustable for this image).';
      } else {
        img.hidden = true;
        note.textContent = `No image for this instance: its pixels are not raw monochrome and the server has no rendering (HTTP ${r.status}).`;
      }
    }
    for (const k of [i + 1, i + 2, i - 1]) if (k >= 0 && k < list.length) get(k);
  }
  const go = (k) => { index = Math.min(list.length - 1, Math.max(0, k)); draw(); };
  slider.addEventListener('input', () => go(+slider.value - 1));
  canvas.addEventListener('wheel', (ev) => { ev.preventDefault(); go(index + Math.sign(ev.deltaY)); }, { passive: false });
  canvas.addEventListener('keydown', (ev) => {
    const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 }[ev.key];
    if (step) { ev.preventDefault(); go(index + step); }
    if (ev.key === 'Home') go(0);
    if (ev.key === 'End') go(list.length - 1);
  });
  let drag = null;
  canvas.addEventListener('pointerdown', (ev) => { if (win) { drag = { x: ev.clientX, y: ev.clientY, ...win }; canvas.setPointerCapture(ev.pointerId); } });
  canvas.addEventListener('pointermove', (ev) => {
    if (!drag || !shown || !shown.raw) return;
    const range = Math.max(1, shown.raw.hi - shown.raw.lo) / 256;
    win = { c: drag.c + (ev.clientY - drag.y) * range, w: Math.max(1, drag.w + (ev.clientX - drag.x) * range) };
    paint(shown);
  });
  canvas.addEventListener('pointerup', () => { drag = null; });
  const typed = () => { if (shown && shown.raw && +ww.value > 0) { win = { c: +wc.value, w: +ww.value }; paint(shown); } };
  wc.addEventListener('change', typed); ww.addEventListener('change', typed);
  await draw();
  canvas.dataset.ready = 'true';
}
