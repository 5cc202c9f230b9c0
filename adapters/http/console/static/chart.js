// Small stacked bar charts in SVG (one bar per minute), with a legend and a tooltip per bar.

import { h, svg } from './dom.js';

export function barChart(points, series, { width = 520, height = 120, label = '' } = {}) {
  const pad = { left: 34, right: 8, top: 8, bottom: 20 };
  const totals = points.map((p) => series.reduce((sum, s) => sum + (p[s.key] || 0), 0));
  const max = Math.max(1, ...totals);
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const step = plotW / Math.max(1, points.length);
  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-label': label,
  });
  chart.append(
    svg('line', { x1: pad.left, y1: pad.top + plotH, x2: width - pad.right, y2: pad.top + plotH, class: 'axis' }),
    svg('text', { x: pad.left - 4, y: pad.top + 8, class: 'tick', 'text-anchor': 'end' }, String(max)),
    svg('text', { x: pad.left - 4, y: pad.top + plotH, class: 'tick', 'text-anchor': 'end' }, '0'),
  );
  points.forEach((point, i) => {
    let y = pad.top + plotH;
    const when = new Date(point.minute).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const tip = `${when}: ${series.map((s) => `${point[s.key] || 0} ${s.label}`).join(', ')}`;
    const group = svg('g', {}, svg('title', {}, tip));
    for (const s of series) {
      const value = point[s.key] || 0;
      if (!value) continue;
      const barH = (value / max) * plotH;
      y -= barH;
      group.append(svg('rect', {
        x: pad.left + i * step + 0.5, y, width: Math.max(1, step - 1), height: barH, class: `bar-${s.color}`,
      }));
    }
    chart.append(group);
  });
  if (points.length) {
    const tick = (point) => new Date(point.minute).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    chart.append(
      svg('text', { x: pad.left, y: height - 4, class: 'tick' }, tick(points[0])),
      svg('text', { x: width - pad.right, y: height - 4, class: 'tick', 'text-anchor': 'end' }, tick(points.at(-1))),
    );
  }
  const legend = h('div', { class: 'legend' }, series.map((s) => h('span', {},
    h('i', { class: `swatch bar-${s.color}` }), `${s.label}: ${points.reduce((n, p) => n + (p[s.key] || 0), 0)}`)));
  return h('figure', { class: 'chart-box' }, h('figcaption', {}, label), chart, legend);
}
