// Overview: queues (counts, limit, paused; pause/resume for roles that may), tasks ended per
// minute over the last hour, worker nodes and their heartbeats, projection lag, and the audit
// chain's last verification. Refreshed every 5 seconds while shown.

import { api } from '../api.js';
import { barChart } from '../chart.js';
import { fmtSeconds, fmtTime, h, section, table, toast } from '../dom.js';

const REFRESH_MS = 5000;

export async function render(main, _param, session) {
  const body = h('div', { class: 'overview' });
  main.append(h('h1', {}, 'Overview'), body);
  let timer = null;
  const refresh = async () => {
    try {
      const parts = await load();
      body.replaceChildren(...layout(parts, session, refresh));
    } catch (error) {
      body.replaceChildren(h('p', { class: 'error' }, `Could not load the overview: ${error.message}`));
    }
    timer = setTimeout(refresh, REFRESH_MS);
  };
  await refresh();
  return () => clearTimeout(timer);
}

async function load() {
  const [queues, activity, workers, health, verification] = await Promise.all([
    api('/v1/queues'), api('/v1/activity?minutes=60'), api('/v1/workers'), api('/healthz'),
    api('/v1/audit/last-verification'),
  ]);
  return { queues, activity, workers, health, verification };
}

function layout({ queues, activity, workers, health, verification }, session, refresh) {
  return [
    section('Queues', queueTable(queues.queues, session, refresh)),
    h('div', { class: 'row' },
      section('Throughput, last hour', barChart(activity.minutes, [
        { key: 'succeeded', label: 'succeeded', color: 'succeeded' },
        { key: 'other', label: 'cancelled or skipped', color: 'cancelled' },
      ], { label: 'tasks ended per minute' })),
      section('Failures, last hour', barChart(activity.minutes, [
        { key: 'failed', label: 'failed', color: 'failed' },
      ], { label: 'tasks failed per minute' }))),
    section('Worker nodes', workerTable(workers.workers)),
    h('div', { class: 'row' },
      section('Projections', projectionTable(health)),
      section('Audit chain', verificationView(verification.last_verification))),
  ];
}

function queueTable(queues, session, refresh) {
  const mayControl = session.access.may_control;
  const columns = [
    ['Queue', (q) => h('a', { href: `#/tasks?queue=${encodeURIComponent(q.name)}` }, q.name)],
    ['Ready', (q) => q.ready], ['Running', (q) => q.running], ['Scheduled', (q) => q.scheduled],
    ['Limit', (q) => q.concurrency ?? '—'],
    ['Paused', (q) => (q.paused ? h('span', { class: 'state state-cancelled' }, 'paused') : 'no')],
  ];
  if (mayControl) {
    columns.push(['', (q) => h('button', {
      class: 'small', dataset: { queue: q.name },
      onclick: async () => {
        try {
          await api(`/v1/queues/${encodeURIComponent(q.name)}/${q.paused ? 'resume' : 'pause'}`, { method: 'POST', body: {} });
          toast(`${q.paused ? 'Resumed' : 'Paused'} ${q.name}`);
          refresh();
        } catch (error) { toast(error.message, 'error'); }
      },
    }, q.paused ? 'Resume' : 'Pause')]);
  }
  return table(columns, queues, { rowAttrs: (q) => ({ 'data-queue': q.name }) });
}

function workerTable(workers) {
  return table([
    ['Worker', (w) => w.worker], ['Host', (w) => `${w.host} (pid ${w.pid})`],
    ['Queues', (w) => (w.queues || []).join(', ')], ['Slots', (w) => `${w.running.length} / ${w.concurrency}`],
    ['Last heartbeat', (w) => h('span', { class: w.seconds_since_seen > 30 ? 'stale' : '' },
      `${fmtSeconds(w.seconds_since_seen)} ago`)],
    ['Started', (w) => fmtTime(w.started_at)],
    ['Registry', (w) => (w.registry_version == null ? '—' : h('span', {
      class: w.registry_current ? '' : 'stale',
      title: w.registry_current ? 'the latest registry version' : 'behind the latest registry version',
    }, `v${w.registry_version}${w.registry_current ? '' : ' (old)'}`))],
  ], workers, { empty: 'No worker node has registered.' });
}

function projectionTable(health) {
  const rows = Object.entries(health.projections).map(([name, position]) => ({ name, position }));
  return h('div', {}, h('p', { class: 'muted' }, `Log head: position ${health.head}`),
    table([
      ['Projection', (p) => p.name], ['Position', (p) => p.position],
      ['Lag (events)', (p) => h('span', { class: health.head - p.position > 1000 ? 'stale' : '' },
        String(Math.max(0, health.head - p.position)))],
    ], rows));
}

export function verificationView(last) {
  if (!last) return h('p', { class: 'muted', id: 'last-verification' }, 'Not verified since this server started (see Audit).');
  const verdict = last.ok
    ? h('span', { class: 'state state-succeeded' }, 'intact')
    : h('span', { class: 'state state-failed' }, `altered at position ${last.first_bad_position} (${last.reason})`);
  const what = last.ok ? `${last.checked} events checked` : last.detail;
  return h('p', { id: 'last-verification' }, verdict,
    ` — ${what}; verified at ${fmtTime(last.verified_at)} by ${last.by}`,
    last.unchained ? `; ${last.unchained} newer events not yet chained` : '');
}
