// Tasks: the task view with filters (state, type, queue, lane, tag, enqueue-time range, text
// in args or error), keyset-paged ("Load more" follows next_cursor), kept live by the event
// stream (each changed task is read again and placed by the same filters), and bulk cancel /
// retry of the selected tasks: one audited request per task, offered only to roles that may;
// or of every task the filters match, as one bulk action (bulk_matching.js).

import { api, follow, query } from '../api.js';
import { matchingButtons } from './bulk_matching.js';
import { clear, fmtTime, globMatch, h, shortId, stateBadge, toast } from '../dom.js';

export const STATES = ['blocked', 'scheduled', 'ready', 'running', 'waiting', 'succeeded', 'failed', 'cancelled', 'skipped'];
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'skipped']);
const FILTERS = ['state', 'type', 'queue', 'lane', 'tag', 'since', 'until', 'text'];
const PAGE = 50;
const LIVE_BATCH = 25;

export function mayCancel(access, t) {
  return access.may_cancel && !TERMINAL.has(t.state)
    && globMatch(t.type, access.task_types) && globMatch(t.adapter, access.adapters);
}

export function mayRetry(session, t) {
  const known = session.taskTypes.find((type) => type.name === t.type && type.adapter === t.adapter);
  return known ? known.may_enqueue : session.access.adhoc && globMatch(t.adapter, session.access.adapters);
}

export async function render(main, _param, session, search) {
  const filter = Object.fromEntries(FILTERS.map((k) => [k, search.get(k) || '']));
  const state = { rows: [], byId: new Map(), selected: new Set(), cursor: null };
  const queues = (await api('/v1/queues')).queues.map((q) => q.name);
  const tbody = h('tbody', { id: 'task-rows' });
  const more = h('button', { id: 'load-more', onclick: () => loadPage(false) }, 'Load more');
  const live = h('span', { id: 'live', class: 'live', 'data-live': 'off' }, 'connecting…');
  const toolbar = h('div', { class: 'toolbar', id: 'bulk' });
  const matching = h('span', { id: 'matching', class: 'buttons' });
  main.append(h('div', { class: 'title-row' }, h('h1', {}, 'Tasks'), live),
    filterForm(filter, session, queues), toolbar,
    h('table', { class: 'grid tasks' }, h('thead', {}, h('tr', {},
      h('th', {}, h('input', { type: 'checkbox', id: 'select-all', 'aria-label': 'select all', onchange: (e) => selectAll(e.target.checked) })),
      ['Task', 'Type', 'State', 'Queue', 'Lane', 'Attempts', 'Enqueued', 'Finished', 'Error'].map((t) => h('th', {}, t)))),
    tbody), more);

  function row(t) {
    const box = h('input', {
      type: 'checkbox', class: 'pick', 'aria-label': `select ${t.id}`, checked: state.selected.has(t.id),
      onchange: (e) => { e.target.checked ? state.selected.add(t.id) : state.selected.delete(t.id); drawToolbar(); },
    });
    return h('tr', { 'data-task': t.id, 'data-state': t.state }, h('td', {}, box),
      h('td', {}, h('a', { href: `#/task/${t.id}`, class: 'mono' }, shortId(t.id))),
      h('td', {}, t.type), h('td', {}, stateBadge(t.state)), h('td', {}, t.queue), h('td', {}, t.lane || ''),
      h('td', {}, `${t.attempts} / ${t.max_attempts}`), h('td', {}, fmtTime(t.enqueued_at)),
      h('td', {}, fmtTime(t.finished_at)), h('td', { class: 'error-cell' }, t.error ? t.error.message || t.error.class : ''));
  }

  function draw() {
    clear(tbody);
    for (const t of state.rows) tbody.append(row(t));
    if (!state.rows.length) tbody.append(h('tr', {}, h('td', { colspan: 10, class: 'muted' }, 'No task matches.')));
    more.hidden = !state.cursor;
    drawToolbar();
  }

  function drawToolbar() {
    const picked = state.rows.filter((t) => state.selected.has(t.id));
    const buttons = [h('span', { class: 'muted' }, `${picked.length} selected`)];
    if (session.access.may_cancel) {
      buttons.push(h('button', { id: 'cancel-selected', disabled: !picked.length, onclick: () => bulk('cancel', picked) }, 'Cancel selected'));
    }
    if (session.taskTypes.some((t) => t.may_enqueue) || session.access.adhoc) {
      buttons.push(h('button', { id: 'retry-selected', disabled: !picked.length, onclick: () => bulk('retry', picked) }, 'Retry selected'));
    }
    // What may be done to the selection may be done to every match too.
    const offered = buttons.slice(1).map((b) => b.id.replace('-selected', ''));
    buttons.push(...matchingButtons(filter, offered, matching, () => loadPage(true)), matching);
    toolbar.replaceChildren(...buttons);
  }

  function selectAll(on) {
    state.selected = new Set(on ? state.rows.map((t) => t.id) : []);
    draw();
  }

  async function bulk(action, picked) {
    const allowed = picked.filter((t) => (action === 'cancel' ? mayCancel(session.access, t) : mayRetry(session, t)));
    let done = 0;
    const refused = [];
    for (const t of allowed) {
      try {
        const body = action === 'cancel' ? { reason: 'cancelled from the console' } : {};
        upsert(await api(`/v1/tasks/${t.id}/${action}`, { method: 'POST', body }));
        done += 1;
      } catch (error) {
        refused.push(`${shortId(t.id)}: ${error.message}`);
      }
    }
    const skipped = picked.length - allowed.length;
    toast(`${action === 'cancel' ? 'Cancelled' : 'Retried'} ${done} of ${picked.length}`
      + (skipped ? `; ${skipped} not allowed for your role or already ended` : '')
      + (refused.length ? `; refused: ${refused.join('; ')}` : ''), refused.length ? 'error' : 'info');
    state.selected.clear();
    draw();
  }

  async function loadPage(first) {
    const params = { ...filter, limit: PAGE, cursor: first ? null : state.cursor };
    try {
      const page = await api(`/v1/tasks${query(params)}`);
      if (first) { state.rows = []; state.byId.clear(); }
      for (const t of page.tasks) if (!state.byId.has(t.id)) { state.rows.push(t); state.byId.set(t.id, t); }
      state.cursor = page.next_cursor;
      draw();
    } catch (error) {
      toast(`Could not list tasks: ${error.message}`, 'error');
    }
  }

  function upsert(t) {
    const known = state.byId.get(t.id);
    if (!matches(t, filter)) {
      if (known) { state.rows = state.rows.filter((r) => r.id !== t.id); state.byId.delete(t.id); }
      return;
    }
    if (known) state.rows[state.rows.indexOf(known)] = t;
    else {
      state.rows.unshift(t);
      state.rows.sort((a, b) => (a.enqueued_at < b.enqueued_at ? 1 : a.enqueued_at > b.enqueued_at ? -1 : 0));
    }
    state.byId.set(t.id, t);
  }

  const pending = new Set();
  let flushing = null;
  async function flush() {
    const ids = [...pending].slice(0, LIVE_BATCH);
    ids.forEach((id) => pending.delete(id));
    const found = await Promise.allSettled(ids.map((id) => api(`/v1/tasks/${id}`)));
    for (const result of found) if (result.status === 'fulfilled') upsert(result.value);
    draw();
    flushing = pending.size ? setTimeout(flush, 300) : null;
  }

  await loadPage(true);
  const stop = new AbortController();
  const notLive = (error) => { live.dataset.live = 'off'; live.textContent = `not live: ${error.message}`; };
  follow({}, (event) => {
    if (event.aggregate !== 'Task') return;
    pending.add(event.aggregate_id);
    if (!flushing) flushing = setTimeout(flush, 300);
  }, stop.signal, () => { live.dataset.live = 'on'; live.textContent = 'live'; }, notLive).catch(notLive);
  return () => { stop.abort(); clearTimeout(flushing); };
}

function matches(t, f) {
  if (f.state && t.state !== f.state) return false;
  if (f.type && t.type !== f.type) return false;
  if (f.queue && t.queue !== f.queue) return false;
  if (f.lane && t.lane !== f.lane) return false;
  if (f.tag && !(t.tags || []).includes(f.tag)) return false;
  if (f.since && new Date(t.enqueued_at) < new Date(f.since)) return false;
  if (f.until && new Date(t.enqueued_at) >= new Date(f.until)) return false;
  if (f.text) {
    const haystack = `${JSON.stringify(t.args)} ${JSON.stringify(t.error || '')}`.toLowerCase();
    if (!haystack.includes(f.text.toLowerCase())) return false;
  }
  return true;
}

function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

function filterForm(filter, session, queues) {
  const select = (name, options) => h('select', { name, id: `filter-${name}` },
    h('option', { value: '' }, 'any'),
    options.map((o) => h('option', { value: o, selected: filter[name] === o }, o)));
  const input = (name, attrs = {}) => h('input', { name, id: `filter-${name}`, value: filter[name], ...attrs });
  const field = (label, control) => h('label', { class: 'field' }, h('span', {}, label), control);
  const form = h('form', { class: 'filters card', id: 'filters' },
    field('State', select('state', STATES)),
    field('Type', select('type', session.taskTypes.map((t) => t.name))),
    field('Queue', select('queue', queues)),
    field('Lane', input('lane', { placeholder: 'lane' })),
    field('Tag', input('tag', { placeholder: 'tag' })),
    field('Enqueued from', h('input', { type: 'datetime-local', name: 'since', id: 'filter-since', value: toLocalInput(filter.since) })),
    field('to', h('input', { type: 'datetime-local', name: 'until', id: 'filter-until', value: toLocalInput(filter.until) })),
    field('Text in args or error', input('text', { placeholder: 'search', type: 'search' })),
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Apply'),
      h('a', { href: '#/tasks', class: 'button' }, 'Clear')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form).entries());
    for (const key of ['since', 'until']) if (values[key]) values[key] = new Date(values[key]).toISOString();
    location.hash = `#/tasks${query(values)}`;
  });
  return form;
}
