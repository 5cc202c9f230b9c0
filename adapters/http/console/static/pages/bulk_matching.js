// Acting on every task that matches the Tasks page's filters, not only the selected rows
// (POST /v1/bulk): a dry run's count first, shown beside a confirm button; then the action,
// its progress read from GET /v1/bulk/{id} until it ends. Offered only with at least one
// filter, and only the actions the role may take (the server checks the type of every
// matched task again and refuses the whole action, recorded, when one is not allowed).

import { api } from '../api.js';
import { h, toast } from '../dom.js';

const VERBS = { cancel: 'Cancel', retry: 'Retry' };
const POLL_MS = 300;

// The buttons for `offered` actions ('cancel', 'retry'); `panel` shows the count, the
// confirmation and the progress; `onDone()` runs once an action ended.
export function matchingButtons(filter, offered, panel, onDone) {
  const where = Object.fromEntries(Object.entries(filter).filter(([, value]) => value));
  if (!Object.keys(where).length) return [];
  return offered.map((action) => h('button', {
    id: `${action}-matching`,
    onclick: () => preview(action, where, panel, onDone),
  }, `${VERBS[action]} all matching…`));
}

async function preview(action, where, panel, onDone) {
  try {
    const dry = await api('/v1/bulk', { method: 'POST', body: { action, filter: where, dry_run: true } });
    if (!dry.matched) {
      panel.replaceChildren(h('span', { class: 'muted', id: 'matching-count' }, 'No matching task would change.'));
      return;
    }
    const tasks = `${dry.matched} matching task${dry.matched === 1 ? '' : 's'}`;
    panel.replaceChildren(
      h('span', { id: 'matching-count' }, `${VERBS[action]} ${tasks}?`),
      h('button', { id: 'confirm-matching', class: 'danger', onclick: () => run(action, where, panel, onDone) },
        `${VERBS[action]} ${dry.matched}`),
      h('button', { id: 'keep-matching', onclick: () => panel.replaceChildren() }, 'Keep them'));
  } catch (error) {
    toast(`Could not count the matching tasks: ${error.message}`, 'error');
  }
}

async function run(action, where, panel, onDone) {
  const status = h('span', { id: 'matching-progress' }, 'starting…');
  panel.replaceChildren(status);
  try {
    let bulk = await api('/v1/bulk', { method: 'POST', body: { action, filter: where } });
    while (bulk.state === 'running') {
      status.textContent = `${bulk.changed + bulk.skipped} of ${bulk.matched} done`;
      await new Promise((resolve) => { setTimeout(resolve, POLL_MS); });
      bulk = await api(`/v1/bulk/${bulk.id}`);
    }
    toast(`${VERBS[action]} all matching: ${bulk.changed} changed, ${bulk.skipped} skipped (${bulk.state})`,
      bulk.state === 'completed' ? 'info' : 'error');
  } catch (error) {
    toast(`Could not ${action} the matching tasks: ${error.message}`, 'error');
  }
  panel.replaceChildren();
  onDone();
}
