// The drill-down: patient -> studies -> series -> instances, with the main tags.
import { api, h, table, tagList, fmtDate, fmtName, ROOT, ohifServed, ohifLink } from '../app.js';
import { studyTable } from './search.js';
import { deleteResource, sendForm } from './actions.js';

function crumbs(...parts) {
  return h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' },
    [h('a', { href: '#/' }, 'Search'), ...parts].flatMap((p, i) => (i ? [' › ', p] : [p])));
}

export async function patientPage(page, id) {
  const [p, studies] = await Promise.all([api('GET', 'patients/' + id), api('GET', `patients/${id}/studies`)]);
  const name = fmtName(p.MainDicomTags.PatientName) || p.MainDicomTags.PatientID;
  page.main.replaceChildren(crumbs(name), h('h1', {}, 'Patient ', name), tagList(p.MainDicomTags),
    h('div', { class: 'actions' },
      h('a', { href: ROOT + `patients/${id}/archive`, download: '' }, 'Download ZIP'),
      h('button', { class: 'danger', onclick: () => deleteResource('patient', id, name, '#/') }, 'Delete patient')),
    sendForm(id, page),
    h('h2', {}, `Studies (${studies.length})`), studyTable(studies.map((s) => ({ ...s, PatientMainDicomTags: p.MainDicomTags })), await ohifServed()));
}

export async function studyPage(page, id) {
  const [s, series] = await Promise.all([api('GET', 'studies/' + id), api('GET', `studies/${id}/series`)]);
  const pname = fmtName(s.PatientMainDicomTags.PatientName) || s.PatientMainDicomTags.PatientID;
  const title = s.MainDicomTags.StudyDescription || fmtDate(s.MainDicomTags.StudyDate) || 'Study';
  series.sort((a, b) => (+a.MainDicomTags.SeriesNumber || 0) - (+b.MainDicomTags.SeriesNumber || 0));
  page.main.replaceChildren(
    crumbs(h('a', { href: '#/patient/' + s.ParentPatient }, pname), title),
    h('h1', {}, 'Study ', title),
    h('div', { class: 'two' }, h('section', {}, h('h2', {}, 'Patient'), tagList(s.PatientMainDicomTags)),
      h('section', {}, h('h2', {}, 'Study'), tagList(s.MainDicomTags))),
    h('div', { class: 'actions' },
      h('a', { href: ROOT + `studies/${id}/archive`, download: '' }, 'Download ZIP'),
      series[0] ? h('a', { href: '#/viewer/' + series[0].ID }, 'Open in viewer') : '',
      await ohifServed() ? h('a', { href: ohifLink(s.MainDicomTags.StudyInstanceUID), class: 'ohif' }, 'Open in OHIF') : '',
      h('button', { class: 'danger', onclick: () => deleteResource('study', id, title, '#/patient/' + s.ParentPatient) },
        'Delete study')),
    sendForm(id, page),
    h('h2', {}, `Series (${series.length})`),
    table([
      ['Number', (x) => x.MainDicomTags.SeriesNumber || '?'],
      ['Modality', (x) => x.MainDicomTags.Modality],
      ['Description', (x) => x.MainDicomTags.SeriesDescription],
      ['Body part', (x) => x.MainDicomTags.BodyPartExamined],
      ['Instances', (x) => (x.Instances || []).length],
      ['', (x) => h('a', { href: '#/viewer/' + x.ID, 'aria-label': 'View series ' + (x.MainDicomTags.SeriesNumber || '') }, 'View')],
    ], series, (x) => '#/series/' + x.ID));
}

export async function seriesPage(page, id) {
  const [se, instances] = await Promise.all([api('GET', 'series/' + id), api('GET', `series/${id}/instances`)]);
  const st = await api('GET', 'studies/' + se.ParentStudy);
  const pname = fmtName(st.PatientMainDicomTags.PatientName) || st.PatientMainDicomTags.PatientID;
  const stTitle = st.MainDicomTags.StudyDescription || fmtDate(st.MainDicomTags.StudyDate) || 'Study';
  const title = [se.MainDicomTags.Modality, se.MainDicomTags.SeriesNumber, se.MainDicomTags.SeriesDescription]
    .filter(Boolean).join(' ') || 'Series';
  instances.sort((a, b) => (+a.MainDicomTags.InstanceNumber || 0) - (+b.MainDicomTags.InstanceNumber || 0));
  page.main.replaceChildren(
    crumbs(h('a', { href: '#/patient/' + st.ParentPatient }, pname),
      h('a', { href: '#/study/' + se.ParentStudy }, stTitle), title),
    h('h1', {}, 'Series ', title), tagList(se.MainDicomTags),
    h('div', { class: 'actions' },
      h('a', { href: ROOT + `series/${id}/archive`, download: '' }, 'Download ZIP'),
      h('a', { href: '#/viewer/' + id }, 'Open in viewer'),
      h('button', { class: 'danger', onclick: () => deleteResource('series', id, title, '#/study/' + se.ParentStudy) },
        'Delete series')),
    sendForm(id, page),
    h('h2', {}, `Instances (${instances.length})`),
    table([
      ['Number', (x) => x.MainDicomTags.InstanceNumber || '?'],
      ['SOP Instance UID', (x) => x.MainDicomTags.SOPInstanceUID],
      ['Frames', (x) => x.MainDicomTags.NumberOfFrames || '1'],
    ], instances, (x) => '#/instance/' + x.ID));
}
