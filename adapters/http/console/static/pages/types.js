// Task types: the registry (adapter, queue, limits, timeouts, retry policy, roles) and, for
// the chosen type, its schema and what history says of it (GET /v1/task-types/{name}):
// tasks per state, attempts per outcome, success and timeout rates, run-time percentiles and
// the suggested start_to_close.

import { api } from '../api.js';
import { fmtPercent, fmtSeconds, h, json, section, table } from '../dom.js';

export async function render(main, name, session) {
  main.append(h('h1', {}, 'Task types'));
  const types = session.taskTypes;
  main.append(section('Registry', table([
    ['Type', (t) => h('a', { href: `#/types/${encodeURIComponent(t.name)}` }, t.name)],
    ['Adapter', (t) => t.adapter], ['Queue', (t) => t.queue], ['Priority', (t) => t.priority],
    ['Lane', (t) => t.lane || '—'],
    ['start_to_close', (t) => fmtSeconds(t.timeouts.start_to_close)],
    ['Attempts', (t) => t.retry.max_attempts ?? '—'], ['Roles', (t) => t.roles.join(', ')],
    ['You may enqueue', (t) => (t.may_enqueue ? 'yes' : 'no')],
  ], types, { rowAttrs: (t) => ({ 'data-type': t.name, class: t.name === name ? 'selected' : '' }) })));
  const chosen = name || (types[0] && types[0].name);
  if (chosen) main.append(await detail(chosen));
}

async function detail(name) {
  const t = await api(`/v1/task-types/${encodeURIComponent(name)}`);
  const s = t.statistics;
  const runs = s.run_seconds;
  const stats = [
    ['Tasks', s.tasks], ['Attempts', s.attempts], ['Success rate', fmtPercent(s.success_rate)],
    ['Timeout rate', fmtPercent(s.timeout_rate)], ['Run time p50', fmtSeconds(runs.p50)],
    ['p95', fmtSeconds(runs.p95)], ['p99', fmtSeconds(runs.p99)], ['max', fmtSeconds(runs.max)],
    ['Suggested start_to_close', h('strong', { id: 'suggested' },
      s.suggested_start_to_close ? fmtSeconds(s.suggested_start_to_close) : 'not yet (needs 20 successes)')],
  ];
  return h('div', { id: 'type-detail' }, h('h2', {}, t.name, t.description ? h('span', { class: 'muted' }, ` — ${t.description}`) : null),
    h('div', { class: 'row' },
      section('Learned statistics', h('dl', { class: 'facts' }, stats.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]))),
      section('By state and outcome', json({ tasks: s.by_state, attempts: s.by_outcome }))),
    h('div', { class: 'row' },
      section('Timeouts (resolved)', json(t.timeouts)), section('Retry policy', json(t.retry)),
      section('Args schema', json(t.schema))));
}
