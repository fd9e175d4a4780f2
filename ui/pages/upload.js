// Upload: files and folders dropped or chosen, each sent with POST /instances
// (XMLHttpRequest: fetch reports no upload progress), three at a time; a
// summary of stored / already stored / failed with the server's reason.
import { h, ROOT, ApiError } from '../app.js';

const PARALLEL = 3;

// The files under a dropped entry, folders walked (readEntries answers in batches).
// A File read from an entry has no webkitRelativePath: its path in the dropped
// folder is the entry's fullPath ("/CD/DICOM/IM1"), kept as relPath for the rows.
async function filesOf(entry, out) {
  if (entry.isFile) {
    const file = await new Promise((ok, ko) => entry.file(ok, ko));
    file.relPath = entry.fullPath.replace(/^\//, '');
    out.push(file);
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((ok, ko) => reader.readEntries(ok, ko));
      if (!batch.length) break;
      for (const e of batch) await filesOf(e, out);
    }
  }
  return out;
}

function send(file, onProgress) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', ROOT + 'instances');
    xhr.setRequestHeader('Content-Type', 'application/dicom');
    xhr.upload.onprogress = (ev) => ev.lengthComputable && onProgress(ev.loaded / ev.total);
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { body = xhr.responseText; }
      if (xhr.status === 200 && body && body.Status) resolve({ status: body.Status, id: body.ID });
      else resolve({ status: 'Failed', reason: new ApiError(xhr.status, body).message });
    };
    xhr.onerror = () => resolve({ status: 'Failed', reason: 'the connection failed' });
    xhr.send(file);
  });
}

export async function uploadPage(page) {
  const list = h('tbody');
  const summary = h('p', { class: 'summary', id: 'upload-summary', 'aria-live': 'polite' });
  const pick = h('input', { type: 'file', multiple: true, id: 'pick-files' });
  const pickDir = h('input', { type: 'file', multiple: true, webkitdirectory: true, id: 'pick-folder' });
  const zone = h('div', { class: 'drop', id: 'drop', tabindex: '0', role: 'region', 'aria-label': 'Drop zone' },
    h('p', {}, 'Drop DICOM files or folders here'),
    h('div', { class: 'actions' }, h('label', {}, 'or choose files', pick), h('label', {}, 'or a folder', pickDir)));
  page.main.replaceChildren(h('h1', {}, 'Upload'), zone, summary,
    h('div', { class: 'tablewrap' }, h('table', { class: 'files' },
      h('thead', {}, h('tr', {}, ['File', 'Size', 'Progress', 'Result'].map((t) => h('th', { scope: 'col' }, t)))), list)));

  let counts = null;
  const showSummary = (left) => {
    summary.textContent = `${counts.Success} stored, ${counts.AlreadyStored} already stored, ${counts.Failed} failed`
      + (left ? ` (${left} to go)` : '');
  };
  async function uploadAll(files) {
    counts = { Success: 0, AlreadyStored: 0, Failed: 0 };
    summary.className = 'summary';
    list.replaceChildren();
    const rows = files.map((f) => {
      const bar = h('progress', { max: 1, value: 0, 'aria-label': 'Upload of ' + f.name });
      const result = h('td', {}, 'waiting');
      list.append(h('tr', {}, h('td', {}, f.webkitRelativePath || f.relPath || f.name), h('td', {}, f.size),
        h('td', {}, bar), result));
      return { f, bar, result };
    });
    let next = 0, left = rows.length;
    showSummary(left);
    const worker = async () => {
      while (next < rows.length) {
        const r = rows[next++];
        r.result.textContent = 'sending';
        const got = await send(r.f, (x) => { r.bar.value = x; });
        r.bar.value = 1;
        counts[got.status in counts ? got.status : 'Failed']++;
        r.result.textContent = got.status === 'Success' ? 'stored' : got.status === 'AlreadyStored'
          ? 'already stored' : 'failed: ' + (got.reason || got.status);
        r.result.className = got.status === 'Failed' ? 'error' : 'ok';
        showSummary(--left);
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, worker));
    summary.dataset.done = 'true';
  }
  pick.addEventListener('change', () => uploadAll([...pick.files]));
  pickDir.addEventListener('change', () => uploadAll([...pickDir.files]));
  zone.addEventListener('dragover', (ev) => { ev.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', async (ev) => {
    ev.preventDefault();
    zone.classList.remove('over');
    const entries = [...ev.dataTransfer.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
    let files = [];
    try {
      if (entries.length) for (const e of entries) await filesOf(e, files);
      else files = [...ev.dataTransfer.files];
    } catch (e) {
      summary.textContent = `cannot read what was dropped: ${e.name}: ${e.message}`;
      summary.className = 'summary error';
      summary.dataset.done = 'true';
      return;
    }
    uploadAll(files);
  });
}
