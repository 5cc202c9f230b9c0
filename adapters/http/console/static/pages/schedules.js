// Schedules: each cron schedule (from the file or created at run time) with its next fire
// time, overlap policy and skipped ticks, its last ticks (the tasks tagged schedule:NAME,
// newest first) and pause / resume for roles that may.

import { api } from '../api.js';
import { fmtTime, h, section, shortId, stateBadge, table, toast } from '../dom.js';

export async function render(main, _param, session) {
  main.append(h('h1', {}, 'Schedules'));
  const body = h('div', {});
  main.append(body);
  const refresh = async () => {
    const { schedules } = await api('/v1/schedules');
    const ticks = await Promise.all(schedules.map((s) =>
      api(`/v1/tasks?tag=${encodeURIComponent(`schedule:${s.name}`)}&limit=5`).then((p) => p.tasks)));
    body.replaceChildren(section('Cron schedules', table(columns(session, refresh, ticks, schedules), schedules,
      { empty: 'No schedule: [schedules.NAME] in the registry, or ledger schedules create.', rowAttrs: (s) => ({ 'data-schedule': s.name }) })));
  };
  await refresh();
}

function columns(session, refresh, ticks, schedules) {
  const lastTicks = (s) => {
    const tasks = ticks[schedules.indexOf(s)];
    if (!tasks.length) return h('span', { class: 'muted' }, 'none yet');
    return h('div', { class: 'ticks' }, tasks.map((t) => h('a', { href: `#/task/${t.id}`, title: fmtTime(t.enqueued_at) },
      stateBadge(t.state), ` ${fmtTime(t.enqueued_at)} `, h('span', { class: 'mono muted' }, shortId(t.id)))));
  };
  const result = [
    ['Schedule', (s) => s.name], ['Cron', (s) => h('code', {}, s.cron)], ['Time zone', (s) => s.timezone],
    ['Source', (s) => s.source], ['Task type', (s) => s.task_type], ['Catch-up', (s) => s.catch_up],
    ['Overlap', (s) => (s.skipped_ticks ? `${s.overlap} (${s.skipped_ticks} skipped)` : s.overlap)],
    ['Next fire', (s) => (s.paused ? h('span', { class: 'state state-cancelled' }, 'paused') : fmtTime(s.next_fire))],
    ['Last ticks', lastTicks],
  ];
  if (session.access.may_control) {
    result.push(['', (s) => h('button', {
      class: 'small',
      onclick: async () => {
        try {
          await api(`/v1/schedules/${encodeURIComponent(s.name)}/${s.paused ? 'resume' : 'pause'}`, { method: 'POST', body: {} });
          toast(`${s.paused ? 'Resumed' : 'Paused'} ${s.name}`);
          refresh();
        } catch (error) { toast(error.message, 'error'); }
      },
    }, s.paused ? 'Resume' : 'Pause')]);
  }
  return result;
}
