// System: what /system, /statistics and the deletion queue say, and whether each
// answers (rest does not relay the other services' /health: that lives on their
// metrics ports, which a browser should not reach).
import { api, h, tagList, errorBox } from '../app.js';

function scalars(o) {
  return Object.fromEntries(Object.entries(o || {}).filter(([, v]) => typeof v !== 'object')
    .map(([k, v]) => [k, String(v)]));
}

export async function systemPage(page) {
  const part = async (title, path) => {
    const t0 = performance.now();
    try {
      const v = await api('GET', path);
      return h('section', {}, h('h2', {}, title), h('p', { class: 'ok' }, `answered in ${Math.round(performance.now() - t0)} ms`),
        tagList(scalars(v)));
    } catch (e) {
      return h('section', {}, h('h2', {}, title), errorBox(e));
    }
  };
  const parts = await Promise.all([part('System', 'system'), part('Statistics', 'statistics'),
    part('Deletion queue', 'tessera/deletion-queue')]);
  page.main.replaceChildren(h('h1', {}, 'System'), h('div', { class: 'two' }, ...parts));
}
