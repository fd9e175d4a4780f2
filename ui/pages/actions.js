// Actions on a resource shared by the study, series and instance pages: send to a
// modality or peer (an asynchronous job, followed here), delete with confirmation.
import { api, h, confirmDialog, errorBox, setStatus, flash } from '../app.js';

export async function deleteResource(level, id, label, afterHash) {
  if (!await confirmDialog(`Delete this ${level}?`,
    `${label} and everything under it will be removed from Tessera. This cannot be undone.`,
    `Delete ${level}`)) return;
  try {
    const plural = { patient: 'patients', study: 'studies', series: 'series', instance: 'instances' }[level];
    await api('DELETE', `${plural}/${id}`);
    flash(`Deleted ${level} ${label}.`);
    location.hash = afterHash;
  } catch (e) {
    setStatus('Delete failed: ' + e.message, true);
  }
}

// A job's state and progress, polled from GET /jobs/{id} (any REST replica
// answers: the registry is shared) until it ends.
export function followJob(id, into) {
  const bar = h('progress', { max: 100, value: 0, 'aria-label': 'Job progress' });
  const text = h('span', { class: 'job-state' }, 'Pending');
  into.replaceChildren(h('p', {}, 'Job ', h('a', { href: '#/jobs' }, id.slice(0, 8)), ': ', text, ' ', bar));
  let timer = null;
  const tick = async () => {
    try {
      const j = await api('GET', 'jobs/' + id);
      bar.value = j.Progress || 0;
      text.textContent = `${j.State} ${j.Progress || 0}%` +
        (j.State === 'Failure' ? ' — ' + (j.ErrorDetails || j.ErrorDescription || '') : '');
      text.className = 'job-state ' + (j.State === 'Success' ? 'ok' : j.State === 'Failure' ? 'error' : '');
      if (['Success', 'Failure'].includes(j.State)) return;
    } catch (e) {
      text.textContent = e.message;
    }
    timer = setTimeout(tick, 500);
  };
  tick();
  return () => clearTimeout(timer);
}

export function sendForm(resourceId, page) {
  const out = h('div', { class: 'send-result', 'aria-live': 'polite' });
  const select = h('select', { name: 'target', id: 'send-target' }, h('option', { value: '' }, 'Loading…'));
  const form = h('form', { class: 'actions send' },
    h('label', {}, 'Send to', select),
    h('button', { type: 'submit' }, 'Send'), out);
  Promise.all([api('GET', 'modalities'), api('GET', 'peers')]).then(([mods, peers]) => {
    select.replaceChildren(
      ...(mods.length + peers.length === 0 ? [h('option', { value: '' }, 'no modality or peer configured')] : []),
      ...mods.map((m) => h('option', { value: 'modalities/' + m }, `${m} (modality)`)),
      ...peers.map((p) => h('option', { value: 'peers/' + p }, `${p} (peer)`)));
  }).catch((e) => out.replaceChildren(errorBox(e)));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!select.value) return;
    try {
      const job = await api('POST', select.value + '/store', { Resources: [resourceId], Asynchronous: true });
      page.onLeave(followJob(job.ID, out));
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  });
  return form;
}
