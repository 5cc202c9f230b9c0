// Simulate (admins): paste a registry file, pick a window of the log and a simulated worker
// pool, run it (POST /v1/simulations) and read the report beside what happened: outcomes,
// waits per queue and type, queue depth and tasks ended over simulated time, the busiest
// lanes, learned timeouts, how faithful the replay was, and the report's digest.

import { api } from '../api.js';
import { h, section, table, toast } from '../dom.js';
import { seriesChart } from '../series_chart.js';

const NUMBERS = [['workers', 'Workers', 1], ['concurrency', 'Concurrency', 10], ['seed', 'Seed', 0]];

export async function render(main, _param, session) {
  main.append(h('h1', {}, 'Simulate'));
  if (session.access.role !== 'admin') {
    main.append(section('Admins only', h('p', { class: 'muted' },
      'Simulations replay the log through another registry; only the admin role may run them.')));
    return null;
  }
  const field = (label, control) => h('label', { class: 'field' }, h('span', {}, label), control);
  const status = h('p', { id: 'sim-status', class: 'muted' });
  const report = h('div', { id: 'sim-report' });
  const form = h('form', { class: 'card', id: 'sim-form' },
    field('Registry (the configuration file\'s TOML)', h('textarea', {
      name: 'toml', id: 'sim-toml', rows: 12, spellcheck: 'false', required: true,
      placeholder: '[queues.default]\nconcurrency = 20\n\n[task_types.report]\nadapter = "python"\n…',
    })),
    h('div', { class: 'filters' },
      field('Since (ISO time or e.g. 24h)', h('input', { name: 'since', id: 'sim-since', placeholder: 'the start of the log' })),
      field('Until (ISO time, e.g. 1h, or a position)', h('input', { name: 'until', id: 'sim-until', placeholder: 'now' })),
      NUMBERS.map(([name, label, value]) => field(label, h('input', {
        name, id: `sim-${name}`, type: 'number', min: name === 'seed' ? 0 : 1, step: 1, value,
      }))),
      h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary', id: 'sim-run' }, 'Run'))));
  const controller = new AbortController();
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = form.querySelector('#sim-run');
    button.disabled = true;
    report.replaceChildren();
    status.className = 'muted';
    status.textContent = 'Simulating… (the window is read from the log; nothing is written)';
    const started = performance.now();
    try {
      const data = await api('/v1/simulations', { method: 'POST', body: body(form), signal: controller.signal });
      status.textContent = `Simulated ${data.tasks} tasks in ${((performance.now() - started) / 1000).toFixed(1)} s.`;
      report.append(...reportView(data));
    } catch (error) {
      if (controller.signal.aborted) return;
      status.className = 'error';
      status.textContent = `Refused (${error.status || 'network'}): ${error.message}`;
      toast(`Could not simulate: ${error.message}`, 'error');
    } finally {
      button.disabled = false;
    }
  });
  main.append(h('p', { class: 'muted' },
    'Replays the recorded submissions of a window of the log through the dispatch rules of the registry ',
    'below, on a simulated clock, with each task\'s recorded run times. The same inputs give the same ',
    'report (its digest). See docs/simulation.md.'), form, status, report);
  return () => controller.abort();
}

function body(form) {
  const values = Object.fromEntries(new FormData(form).entries());
  const request = { toml: values.toml };
  if (values.since.trim()) request.since = values.since.trim();
  const until = values.until.trim();
  if (/^\d+$/.test(until)) request.until_position = Number(until);
  else if (until) request.until = until;
  for (const [name] of NUMBERS) {
    if (values[name] !== '') request[name] = Number(values[name]);
  }
  return request;
}

function reportView(data) {
  return [
    h('div', { class: 'row' }, summary(data), outcomes(data.outcomes)),
    h('div', { class: 'row' },
      section('Waits by queue', waits(data.waits_by_queue, 'queue', 'sim-waits-queue')),
      section('Waits by type', waits(data.waits_by_type, 'type', 'sim-waits-type'))),
    h('div', { class: 'row' },
      section('Queue depth', h('div', { id: 'sim-depth' },
        seriesChart(data.queue_depth, { label: 'tasks waiting (most in each bucket), simulated time', color: 'ready', unit: 'waiting' }))),
      section('Tasks ended', h('div', { id: 'sim-ended' },
        seriesChart(data.tasks_ended, { label: 'tasks ended per bucket, simulated time', color: 'succeeded', unit: 'ended' })))),
    h('div', { class: 'row' },
      section('Busiest lanes', table(
        [['Lane', (l) => l.lane], ['Tasks', (l) => l.tasks], ['Waited in all', (l) => ms(l.total_wait_ms)]],
        data.busiest_lanes, { empty: 'No task ran in a lane.' })),
      section('Learned timeouts', learned(data.learned_timeouts))),
    section('Longest simulated waits', table(
      [['Task', (w) => h('a', { href: `#/task/${w.task_id}` }, w.task_id)], ['Type', (w) => w.type],
        ['Queue', (w) => w.queue], ['Wait', (w) => ms(w.wait_ms)]],
      data.worst, { empty: 'No task started.' })),
  ];
}

function summary(data) {
  const f = data.fidelity;
  const i = data.inputs;
  const items = [
    ['Tasks', data.tasks],
    ['Log positions', `${i.first_position} – ${i.last_position}`],
    ['Pool', `${i.workers} worker(s) × ${i.concurrency}, seed ${i.seed}`],
    ['Registry sha256', h('code', {}, i.registry_sha256.slice(0, 16))],
    ['Fidelity', h('span', { id: 'sim-fidelity' }, f.start_order_spearman === undefined
      ? `${f.tasks} task(s) to compare: too few`
      : `start order Spearman ${f.start_order_spearman}; wait error mean ${ms(f.wait_error_mean_ms)}, p95 ${ms(f.wait_error_p95_ms)} (${f.tasks} tasks)`)],
    ['Report digest', h('code', { id: 'sim-digest', title: 'sha256 of the canonical report' }, data.digest)],
  ];
  return h('section', { class: 'card' }, h('h2', {}, 'Report'),
    h('dl', { class: 'facts' }, items.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
}

function outcomes(o) {
  const states = [...new Set([...Object.keys(o.simulated), ...Object.keys(o.recorded)])].sort();
  const rows = [
    ...states.map((state) => ({ name: state, simulated: o.simulated[state] || 0, recorded: o.recorded[state] || 0 })),
    { name: 'retries', simulated: o.retries.simulated, recorded: o.retries.recorded },
  ];
  const why = Object.entries(o.why);
  return section('Outcomes',
    h('div', { id: 'sim-outcomes' }, table(
      [['', (r) => r.name], ['Simulated', (r) => r.simulated], ['Recorded', (r) => r.recorded]], rows)),
    o.rate_limited.tasks ? h('p', { class: 'muted' },
      `${o.rate_limited.tasks} task(s) held by rate limits, ${o.rate_limited.seconds} s in all.`) : null,
    why.length ? [h('h3', {}, 'Why not succeeded'), h('ul', { id: 'sim-why' },
      why.map(([reason, count]) => h('li', {}, `${count} × ${reason}`)))] : null);
}

function waits(groups, title, id) {
  const spread = (s) => `${ms(s.p50_ms)} / ${ms(s.p95_ms)} / ${ms(s.p99_ms)}`;
  return h('div', { id }, table([
    [title, ([name]) => name],
    ['Tasks', ([, w]) => w.simulated.tasks],
    ['Simulated p50 / p95 / p99', ([, w]) => spread(w.simulated)],
    ['Recorded p50 / p95 / p99', ([, w]) => spread(w.recorded)],
  ], Object.entries(groups), { empty: 'No waits.' }));
}

function learned(types) {
  return h('div', { id: 'sim-learned' }, table([
    ['Type', ([name]) => name],
    ['Suggested start_to_close', ([, l]) => (l.suggested_start_to_close === null ? 'too few successes' : `${l.suggested_start_to_close} s`)],
    ['Attempts', ([, l]) => l.attempts],
    ['Would cut', ([, l]) => (l.would_cut === null ? '—' : l.would_cut)],
  ], Object.entries(types), { empty: 'No attempts ran in the window.' }));
}

function ms(value) {
  if (value === null || value === undefined) return '—';
  return value < 1000 ? `${Math.round(value)} ms` : `${(value / 1000).toFixed(value < 10000 ? 2 : 1)} s`;
}
