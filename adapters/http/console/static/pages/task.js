// One task: state and facts, cancel / retry (when the role may), its attempts as a timeline
// (waiting, running, each timeout or retry), args, result, error, stdout/stderr excerpts of
// each attempt, every event with its log position, and its DAG drawn with states as colours.
// Kept current by the event stream filtered to this task.

import { api, follow } from '../api.js';
import { drawGraph } from '../graph.js';
import { fmtSeconds, fmtTime, h, json, section, shortId, stateBadge, svg, table, toast } from '../dom.js';
import { mayCancel, mayRetry } from './tasks.js';

const EXCERPT = 4000;
const ENDINGS = new Set(['TaskSucceeded', 'TaskFailed', 'TaskTimedOut', 'TaskCancelled', 'TaskSkipped']);
const RETRYABLE_STATES = new Set(['failed', 'cancelled', 'skipped']);

export async function render(main, id, session) {
  const body = h('div', { class: 'task-page' });
  main.append(body);
  const stop = new AbortController();
  let timer = null;
  const refresh = async () => {
    try {
      const [t, history, graph] = await Promise.all([
        api(`/v1/tasks/${id}`), api(`/v1/tasks/${id}/history`), api(`/v1/graph?task=${id}`),
      ]);
      body.replaceChildren(...layout(t, history.events, graph, session, refresh));
    } catch (error) {
      body.replaceChildren(h('p', { class: 'error' }, `Could not load task ${id}: ${error.message}`));
    }
  };
  await refresh();
  follow({ task: id }, () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  }, stop.signal).catch(() => {});
  return () => { stop.abort(); clearTimeout(timer); };
}

function layout(t, events, graph, session, refresh) {
  return [
    h('div', { class: 'title-row' }, h('h1', {}, `${t.type} `, h('span', { class: 'mono muted' }, shortId(t.id))),
      stateBadge(t.state), actions(t, session, refresh)),
    facts(t),
    section('Attempts', timeline(events, t)),
    h('div', { class: 'row' }, section('Args', json(t.args)), section('Result', json(t.result)),
      section('Error', json(t.error))),
    section('Output', outputs(events)),
    section('Graph', graph.nodes.length > 1
      ? drawGraph(graph, t.id, { onOpen: (other) => { location.hash = `#/task/${other}`; } })
      : h('p', { class: 'muted' }, 'This task is not part of a graph.')),
    section('Events', eventTable(events)),
  ];
}

function actions(t, session, refresh) {
  const buttons = [];
  const act = (name, body) => async () => {
    try {
      await api(`/v1/tasks/${t.id}/${name}`, { method: 'POST', body });
      toast(name === 'cancel' ? 'Cancelled' : 'Retry scheduled');
      refresh();
    } catch (error) { toast(error.message, 'error'); }
  };
  if (mayCancel(session.access, t)) {
    buttons.push(h('button', { id: 'cancel-task', class: 'danger', onclick: act('cancel', { reason: 'cancelled from the console' }) }, 'Cancel'));
  }
  if (RETRYABLE_STATES.has(t.state) && mayRetry(session, t)) {
    buttons.push(h('button', { id: 'retry-task', onclick: act('retry', {}) }, 'Retry'));
  }
  return h('div', { class: 'actions' }, buttons);
}

function facts(t) {
  const items = [
    ['Id', h('span', { class: 'mono' }, t.id)], ['Queue', t.queue], ['Lane', t.lane || '—'],
    ['Priority', t.priority], ['Adapter', t.adapter], ['Attempts', `${t.attempts} / ${t.max_attempts}`],
    ['Enqueued by', `${t.principal} (${t.role})`], ['Enqueued', fmtTime(t.enqueued_at)],
    ['Started', fmtTime(t.started_at)], ['Finished', fmtTime(t.finished_at)],
    ['Worker', t.worker || '—'], ['Tags', (t.tags || []).join(', ') || '—'],
    ['Ref', t.ref || '—'], ['Idempotency key', t.idempotency_key || '—'],
    ['Log position', t.position],
  ];
  // Why a ready task does not start: a rate limit's bucket is full until its next slot.
  if (t.held_by) items.splice(3, 0, ['Held by', h('span', { id: 'held-by' }, t.held_by)]);
  return h('dl', { class: 'facts card' }, items.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

// Segments: waiting (blocked, queued, backing off) and running (one per attempt, by outcome).
export function segments(events, now) {
  const result = [];
  let waitingSince = null;
  let waitingKind = 'waiting';
  let running = null;
  for (const e of events) {
    const at = new Date(e.time).getTime();
    const close = (kind) => {
      if (waitingSince !== null) result.push({ kind: waitingKind, start: waitingSince, end: at });
      waitingSince = null;
      if (running) { running.end = at; running.outcome = kind; result.push(running); running = null; }
    };
    if (e.type === 'TaskEnqueued') { waitingSince = at; waitingKind = (e.data.depends_on || []).length ? 'blocked' : 'waiting'; }
    else if (e.type === 'TaskUnblocked') { close(); waitingSince = at; waitingKind = 'waiting'; }
    else if (e.type === 'TaskStarted') { close(); running = { kind: 'running', attempt: e.data.attempt, start: at, worker: e.data.worker }; }
    else if (e.type === 'TaskRetryScheduled') { close(); waitingSince = at; waitingKind = e.data.manual ? 'waiting' : 'backoff'; }
    else if (ENDINGS.has(e.type)) {
      const outcome = { TaskSucceeded: 'succeeded', TaskFailed: 'failed', TaskTimedOut: `timed out (${e.data.kind})`, TaskCancelled: 'cancelled', TaskSkipped: 'skipped' }[e.type];
      const idle = !running;
      close(outcome);
      if (idle) result.push({ kind: 'ended', start: at, end: at, outcome });
    }
  }
  if (waitingSince !== null) result.push({ kind: waitingKind, start: waitingSince, end: now, open: true });
  if (running) result.push({ ...running, end: now, outcome: 'running', open: true });
  return result;
}

function timeline(events, t) {
  const now = Date.now();
  const parts = segments(events, t.finished_at ? new Date(t.finished_at).getTime() : now);
  if (!parts.length) return h('p', { class: 'muted' }, 'No attempt yet.');
  const start = Math.min(...parts.map((p) => p.start));
  const span = Math.max(1, Math.max(...parts.map((p) => p.end)) - start);
  const width = 760; const left = 190; const rowH = 24;
  const drawing = svg('svg', { class: 'timeline', viewBox: `0 0 ${width} ${parts.length * rowH + 6}`, width: '100%' });
  parts.forEach((p, i) => {
    const x = left + ((p.start - start) / span) * (width - left - 10);
    const w = Math.max(3, ((p.end - p.start) / span) * (width - left - 10));
    const seconds = (p.end - p.start) / 1000;
    const name = p.kind === 'running' ? `attempt ${p.attempt}: ${p.outcome}` : p.kind === 'ended' ? p.outcome : p.kind;
    const outcomeClass = p.kind === 'running' ? `seg-${String(p.outcome).split(' ')[0]}` : `seg-${p.kind}`;
    drawing.append(svg('g', { class: `segment ${outcomeClass}`, 'data-kind': p.kind },
      svg('title', {}, `${name}, ${fmtSeconds(seconds)}${p.worker ? ` on ${p.worker}` : ''}`),
      svg('text', { x: 4, y: i * rowH + 17, class: 'seg-label' }, `${name} · ${fmtSeconds(seconds)}`),
      svg('rect', { x, y: i * rowH + 5, width: w, height: rowH - 8, rx: 3 })));
  });
  return drawing;
}

function outputs(events) {
  const blocks = [];
  for (const e of events) {
    const details = e.data.details || {};
    const result = e.data.result && typeof e.data.result === 'object' ? e.data.result : {};
    for (const stream of ['stdout', 'stderr']) {
      const text = details[stream] ?? result[stream];
      if (typeof text === 'string' && text.length) {
        const excerpt = text.length > EXCERPT ? `…${text.slice(-EXCERPT)}` : text;
        blocks.push(h('div', { class: 'output' }, h('h3', {}, `attempt ${e.data.attempt} · ${stream}`), h('pre', {}, excerpt)));
      }
    }
  }
  return blocks.length ? blocks : h('p', { class: 'muted' }, 'No stdout or stderr recorded.');
}

function eventTable(events) {
  return table([
    ['Position', (e) => e.position], ['Time', (e) => fmtTime(e.time)], ['Event', (e) => e.type],
    ['By', (e) => e.principal],
    ['Data', (e) => {
      const text = JSON.stringify(e.data);
      return h('code', { title: text }, text.length > 160 ? `${text.slice(0, 159)}…` : text);
    }],
  ], events, { rowAttrs: (e) => ({ 'data-event': e.type }) });
}
