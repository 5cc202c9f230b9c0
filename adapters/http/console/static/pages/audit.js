// Audit: the audit log (each event with the principal on whose authority and the actor who
// did it) filtered by principal, actor, task, event type and time, denials alone on request,
// paged forward from a position (by default the last 1,000 positions of the log); and, for
// roles that may, a button that verifies the hash chain: intact, or the first altered position.

import { api, query } from '../api.js';
import { fmtTime, h, section, table } from '../dom.js';
import { verificationView } from './overview.js';

const RECENT = 1000;
const FIELDS = ['principal', 'actor', 'task', 'type', 'since', 'until', 'after'];

export async function render(main, _param, session, search) {
  const filter = Object.fromEntries(FIELDS.map((k) => [k, search.get(k) || '']));
  const denials = search.get('denials') === '1';
  if (denials) filter.type = 'AccessDenied';
  main.append(h('h1', {}, 'Audit'));
  if (session.access.may_control) main.append(verifyPanel(await api('/v1/audit/last-verification')));
  main.append(form(filter, denials));
  const rows = h('div', { id: 'audit-rows' });
  const more = h('button', { id: 'audit-more', hidden: true }, 'Load more');
  main.append(section('Log', rows, more));
  const entries = [];
  let after = filter.after;
  if (after === '') {
    const head = (await api('/healthz')).head;
    after = String(Math.max(0, head - RECENT));
  }
  const load = async () => {
    const page = await api(`/v1/audit/log${query({ ...filter, after, limit: 200 })}`);
    entries.push(...page.entries);
    rows.replaceChildren(h('p', { class: 'muted' }, `${entries.length} ${entries.length === 1 ? 'entry' : 'entries'} after position ${filter.after || after}`
      + ` (log head ${page.head})`), auditTable(entries));
    more.hidden = page.next_after === null;
    after = String(page.next_after ?? after);
  };
  more.addEventListener('click', load);
  await load();
}

function auditTable(entries) {
  return table([
    ['Position', (e) => e.position], ['Time', (e) => fmtTime(e.time)],
    ['Event', (e) => h('span', { class: e.type === 'AccessDenied' ? 'denied' : '' }, e.type)],
    ['Subject', (e) => (e.aggregate === 'Task' ? h('a', { href: `#/task/${e.subject_id}`, class: 'mono' }, String(e.subject_id).slice(0, 8)) : e.aggregate)],
    ['Principal', (e) => e.principal], ['Actor', (e) => e.actor],
    ['Data', (e) => { const text = JSON.stringify(e.data); return h('code', { title: text }, text.length > 120 ? `${text.slice(0, 119)}…` : text); }],
  ], entries, { empty: 'No matching event in this range.', rowAttrs: (e) => ({ 'data-event': e.type }) });
}

function verifyPanel(last) {
  const result = h('div', { id: 'verify-result' }, verificationView(last.last_verification));
  const button = h('button', { id: 'verify', class: 'primary' }, 'Verify the chain');
  button.addEventListener('click', async () => {
    button.disabled = true;
    result.replaceChildren(h('p', { class: 'muted' }, 'Verifying…'));
    try {
      await api('/v1/audit/verify');
      result.replaceChildren(verificationView((await api('/v1/audit/last-verification')).last_verification));
    } catch (error) {
      result.replaceChildren(h('p', { class: 'error' }, error.message));
    }
    button.disabled = false;
  });
  return section('Hash chain', h('p', {}, 'Recompute the chain over every stored event and compare.'), button, result);
}

function form(filter, denials) {
  const input = (name, label, attrs = {}) => h('label', { class: 'field' }, h('span', {}, label),
    h('input', { name, id: `audit-${name}`, value: filter[name], ...attrs }));
  const element = h('form', { class: 'filters card', id: 'audit-filters' },
    input('principal', 'Principal'), input('actor', 'Actor'), input('task', 'Task id'),
    input('type', 'Event types', { placeholder: 'TaskCancelled,AccessDenied' }),
    input('since', 'From (ISO time)', { placeholder: '2026-01-01T00:00:00Z' }),
    input('until', 'Until (ISO time)'), input('after', 'After position', { placeholder: `head − ${RECENT}` }),
    h('label', { class: 'field check' }, h('input', { type: 'checkbox', name: 'denials', value: '1', id: 'audit-denials', checked: denials }), h('span', {}, 'Denials only')),
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Apply')));
  element.addEventListener('submit', (event) => {
    event.preventDefault();
    location.hash = `#/audit${query(Object.fromEntries(new FormData(element).entries()))}`;
  });
  return element;
}
