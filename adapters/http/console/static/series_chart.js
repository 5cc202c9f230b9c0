// A chart of one series of the simulation's report (``{bucket_seconds, values}``): a bar per
// bucket of simulated time, the largest value on the axis, a tooltip per bar.

import { fmtSeconds, h, svg } from './dom.js';

export function seriesChart(series, { width = 520, height = 120, label = '', color = 'ready', unit = '' } = {}) {
  const values = (series && series.values) || [];
  const bucket = (series && series.bucket_seconds) || 1;
  const pad = { left: 34, right: 8, top: 8, bottom: 20 };
  const top = Math.max(0, ...values);
  const max = Math.max(1, top);
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const step = plotW / Math.max(1, values.length);
  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-label': label,
  });
  chart.append(
    svg('line', { x1: pad.left, y1: pad.top + plotH, x2: width - pad.right, y2: pad.top + plotH, class: 'axis' }),
    svg('text', { x: pad.left - 4, y: pad.top + 8, class: 'tick', 'text-anchor': 'end' }, String(round(max))),
    svg('text', { x: pad.left - 4, y: pad.top + plotH, class: 'tick', 'text-anchor': 'end' }, '0'),
  );
  values.forEach((value, i) => {
    if (!value) return;
    const barH = (value / max) * plotH;
    chart.append(svg('g', {},
      svg('title', {}, `${fmtSeconds(i * bucket)} – ${fmtSeconds((i + 1) * bucket)}: ${round(value)} ${unit}`),
      svg('rect', {
        x: pad.left + i * step + 0.5, y: pad.top + plotH - barH, width: Math.max(1, step - 1), height: barH,
        class: `bar-${color}`,
      })));
  });
  chart.append(
    svg('text', { x: pad.left, y: height - 4, class: 'tick' }, '0 s'),
    svg('text', { x: width - pad.right, y: height - 4, class: 'tick', 'text-anchor': 'end' },
      fmtSeconds(values.length * bucket)),
  );
  const legend = h('div', { class: 'legend' },
    h('span', {}, h('i', { class: `swatch bar-${color}` }), `max ${round(top)} · ${values.length} buckets of ${fmtSeconds(bucket)}`));
  return h('figure', { class: 'chart-box' }, h('figcaption', {}, label), chart, legend);
}

function round(value) {
  return Math.round(value * 100) / 100;
}
