// System: what /system, /statistics and the deletion queue say, and whether each
// answers; and every service process of the cluster with its state, from the
// heartbeats that each one writes in the database (GET /tessera/services: rest
// does not relay the other services' /health, which lives on their metrics
// ports that a browser should not reach). The list refreshes every 5 seconds.
import { api, h, table, tagList, errorBox } from '../app.js';

const REFRESH_MS = 5000;

function scalars(o) {
  return Object.fromEntries(Object.entries(o || {}).filter(([, v]) => typeof v !== 'object')
    .map(([k, v]) => [k, String(v)]));
}

function servicesTable(list) {
  if (!list.length) return h('p', {}, 'No service process has written a heartbeat.');
  const up = list.filter((s) => s.State === 'up').length;
  return h('div', {},
    h('p', { id: 'services-count' }, `${up} of ${list.length} processes up`),
    h('div', { class: 'tablewrap' }, table([
      ['Service', (s) => s.Service],
      ['State', (s) => h('span', { class: 'service-state ' + (s.State === 'up' ? (s.Healthy ? 'ok' : 'error') : s.State === 'down' ? 'error' : '') },
        s.State === 'up' && !s.Healthy ? 'up, unhealthy' : s.State)],
      ['Host', (s) => s.Host],
      ['PID', (s) => String(s.Pid)],
      ['Version', (s) => s.Version],
      ['Started', (s) => (s.StartedAt || '').replace('T', ' ').replace('Z', ' UTC')],
      ['Last seen', (s) => `${s.SecondsSinceLastSeen} s ago`],
      ['Health', (s) => s.Healthy ? 'ok' : (s.Reason || 'unhealthy')],
    ], list, null)));
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
  const services = h('section', { id: 'services', 'aria-live': 'polite' }, h('h2', {}, 'Services'));
  let timer = null, stopped = false;
  page.onLeave(() => { stopped = true; clearTimeout(timer); });
  async function refreshServices() {
    clearTimeout(timer);
    let body;
    try {
      body = servicesTable(await api('GET', 'tessera/services'));
    } catch (e) {
      body = errorBox(e);
    }
    services.replaceChildren(h('h2', {}, 'Services'), body);
    services.dataset.refreshed = String(Date.now());
    if (!stopped) timer = setTimeout(refreshServices, REFRESH_MS);
  }
  const parts = await Promise.all([part('System', 'system'), part('Statistics', 'statistics'),
    part('Deletion queue', 'tessera/deletion-queue'), refreshServices()]);
  page.main.replaceChildren(h('h1', {}, 'System'), h('div', { class: 'two' }, ...parts.slice(0, 3)), services);
}
