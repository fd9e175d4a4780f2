// Jobs: every job of the cluster (the registry is shared by all REST replicas),
// refreshed every second, with the controls that the job's state allows.
import { api, h, table, errorBox, setStatus } from '../app.js';

const CONTROLS = {
  Pending: ['pause', 'cancel'], Running: ['pause', 'cancel'], Paused: ['resume', 'cancel'],
  Retry: ['cancel'], Failure: ['resubmit'], Success: [],
};

export async function jobsPage(page) {
  const box = h('div', { id: 'jobs' });
  page.main.replaceChildren(h('h1', {}, 'Jobs'), box);
  let timer = null, stopped = false;
  page.onLeave(() => { stopped = true; clearTimeout(timer); });
  const control = async (id, what) => {
    try {
      await api('POST', `jobs/${id}/${what}`, {});
      setStatus(`Job ${id.slice(0, 8)}: ${what} asked.`);
    } catch (e) {
      setStatus(`Job ${id.slice(0, 8)}: ${what} refused: ${e.message}`, true);
    }
    refresh();
  };
  async function refresh() {
    clearTimeout(timer);
    try {
      const jobs = await api('GET', 'jobs?expand');
      jobs.sort((a, b) => (b.CreationTime || '').localeCompare(a.CreationTime || ''));
      // keep the focus on a control across refreshes
      const focused = document.activeElement && document.activeElement.dataset.key;
      box.replaceChildren(jobs.length === 0 ? h('p', {}, 'No job.') : table([
        ['Job', (j) => j.ID.slice(0, 8)],
        ['Type', (j) => j.Type],
        ['State', (j) => h('span', { class: 'job-state ' + (j.State === 'Failure' ? 'error' : j.State === 'Success' ? 'ok' : '') }, j.State)],
        ['Progress', (j) => h('span', {}, h('progress', { max: 100, value: j.Progress || 0, 'aria-label': 'Progress of job ' + j.ID.slice(0, 8) }),
          ` ${j.Progress || 0}%`)],
        ['Created', (j) => (j.CreationTime || '').replace(/^(\d{8})T(\d{2})(\d{2})(\d{2}).*/, '$1 $2:$3:$4')],
        ['Error', (j) => j.State === 'Failure' ? (j.ErrorDetails || j.ErrorDescription || '') : ''],
        ['Actions', (j) => h('span', { class: 'actions' }, (CONTROLS[j.State] || []).map((c) =>
          h('button', { type: 'button', 'data-key': j.ID + c, 'aria-label': `${c} job ${j.ID.slice(0, 8)}`, onclick: () => control(j.ID, c) }, c)))],
      ], jobs, null));
      if (focused) box.querySelector(`[data-key="${focused}"]`)?.focus();
    } catch (e) {
      box.replaceChildren(errorBox(e));
    }
    if (!stopped) timer = setTimeout(refresh, 1000);
  }
  await refresh();
}
