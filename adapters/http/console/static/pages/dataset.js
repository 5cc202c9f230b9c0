// Dataset: download the learning dataset (one row per finished attempt, replayed from the
// log) as JSONL, CSV or Parquet, for a bound (a log position or a time) and optional filters.

import { download, query } from '../api.js';
import { h, section, toast } from '../dom.js';

export async function render(main, _param, session) {
  const field = (label, control) => h('label', { class: 'field' }, h('span', {}, label), control);
  const status = h('p', { id: 'dataset-status', class: 'muted' });
  const form = h('form', { class: 'filters card', id: 'dataset-form' },
    field('Format', h('select', { name: 'format', id: 'dataset-format' },
      ['jsonl', 'csv', 'parquet'].map((f) => h('option', { value: f }, f)))),
    field('Until (position or ISO time)', h('input', { name: 'until', placeholder: 'the head of the log' })),
    field('Since (position or ISO time)', h('input', { name: 'since', placeholder: 'the start' })),
    field('Task type', h('select', { name: 'type' }, h('option', { value: '' }, 'every type'),
      session.taskTypes.map((t) => h('option', { value: t.name }, t.name)))),
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary', id: 'download' }, 'Download')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form).entries());
    status.textContent = 'Replaying the log…';
    try {
      const bytes = await download(`/v1/dataset${query(values)}`, `dataset.${values.format}`);
      status.textContent = `Downloaded dataset.${values.format} (${bytes} bytes).`;
    } catch (error) {
      status.textContent = '';
      toast(`Could not download: ${error.message}`, 'error');
    }
  });
  main.append(h('h1', {}, 'Dataset'), section('Learning dataset',
    h('p', {}, 'One row per finished attempt, replayed from the event log alone: the same bytes as ',
      h('code', {}, 'ledger replay'), ' for the same bound. See docs/dataset.md.'), form, status));
}
