// A task's DAG as a layered drawing in SVG: nodes in columns by depth (dependencies to the
// left), ordered in each column by the mean position of their neighbours (a few sweeps),
// edges as curves, states as colours. A large graph is drawn around the focused task only
// (its neighbourhood within a few steps), so the page stays usable with thousands of nodes.

import { h, svg } from './dom.js';

const NODE_W = 168;
const NODE_H = 38;
const GAP_X = 64;
const GAP_Y = 14;
export const MAX_DRAWN = 300;

function neighbourhood(graph, focus, limit) {
  const adjacent = new Map(graph.nodes.map((n) => [n.id, []]));
  for (const e of graph.edges) {
    adjacent.get(e.from)?.push(e.to);
    adjacent.get(e.to)?.push(e.from);
  }
  const keep = new Set([focus]);
  let frontier = [focus];
  while (frontier.length && keep.size < limit) {
    const next = [];
    for (const id of frontier) {
      for (const other of adjacent.get(id) || []) {
        if (keep.size >= limit) break;
        if (!keep.has(other)) { keep.add(other); next.push(other); }
      }
    }
    frontier = next;
  }
  return keep;
}

function layers(nodes, edges) {
  const parents = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) parents.get(e.to)?.push(e.from);
  const depth = new Map();
  const visit = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const d = Math.max(-1, ...parents.get(id).map((p) => visit(p, seen))) + 1;
    depth.set(id, d);
    return d;
  };
  nodes.forEach((n) => visit(n.id));
  const columns = [];
  for (const n of nodes) (columns[depth.get(n.id)] ||= []).push(n);
  return columns.map((c) => c || []);
}

function order(columns, edges) {
  const position = new Map();
  const place = () => columns.forEach((c) => c.forEach((n, i) => position.set(n.id, i)));
  place();
  const parents = new Map();
  const children = new Map();
  for (const e of edges) {
    (parents.get(e.to) || parents.set(e.to, []).get(e.to)).push(e.from);
    (children.get(e.from) || children.set(e.from, []).get(e.from)).push(e.to);
  }
  const mean = (ids, fallback) => (ids && ids.length
    ? ids.reduce((s, id) => s + (position.get(id) ?? fallback), 0) / ids.length : fallback);
  for (let sweep = 0; sweep < 4; sweep++) {
    const forward = sweep % 2 === 0;
    const sequence = forward ? columns.slice(1) : columns.slice(0, -1).reverse();
    for (const column of sequence) {
      const by = forward ? parents : children;
      column.sort((a, b) => mean(by.get(a.id), position.get(a.id)) - mean(by.get(b.id), position.get(b.id)));
      column.forEach((n, i) => position.set(n.id, i));
    }
  }
}

function label(node) {
  const text = node.ref || node.type || String(node.id).slice(0, 8);
  return text.length > 22 ? `${text.slice(0, 21)}…` : text;
}

export function drawGraph(graph, focus, { onOpen } = {}) {
  let nodes = graph.nodes;
  let edges = graph.edges;
  let note = null;
  if (nodes.length > MAX_DRAWN) {
    const keep = neighbourhood(graph, focus, MAX_DRAWN);
    nodes = nodes.filter((n) => keep.has(n.id));
    edges = edges.filter((e) => keep.has(e.from) && keep.has(e.to));
    note = `A large graph: ${graph.nodes.length} tasks${graph.truncated ? ' (or more)' : ''}; `
      + `drawn: the ${nodes.length} nearest to this task. Open another task to move around.`;
  }
  const columns = layers(nodes, edges);
  order(columns, edges);
  const at = new Map();
  const layer = new Map();
  columns.forEach((column, x) => column.forEach((n) => layer.set(n.id, x)));
  // An edge that skips layers arcs over the nodes between (higher the more it skips).
  const bulge = (e) => Math.max(0, layer.get(e.to) - layer.get(e.from) - 1) * 14 + 10;
  const long = edges.filter((e) => layer.get(e.to) - layer.get(e.from) > 1);
  const top = 10 + (long.length ? Math.max(...long.map(bulge)) + NODE_H / 2 : 0);
  const tallest = Math.max(...columns.map((c) => c.length), 1);
  columns.forEach((column, x) => column.forEach((n, y) => {
    const offset = ((tallest - column.length) * (NODE_H + GAP_Y)) / 2;
    at.set(n.id, { x: 10 + x * (NODE_W + GAP_X), y: top + offset + y * (NODE_H + GAP_Y) });
  }));
  const width = 20 + columns.length * (NODE_W + GAP_X) - GAP_X;
  const height = top + 10 + tallest * (NODE_H + GAP_Y) - GAP_Y;
  const drawing = svg('svg', {
    class: 'dag', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'task graph',
  });
  drawing.append(svg('defs', {}, svg('marker', {
    id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto',
  }, svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }))));
  for (const e of edges) {
    const a = at.get(e.from);
    const b = at.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + NODE_W; const y1 = a.y + NODE_H / 2; const x2 = b.x; const y2 = b.y + NODE_H / 2;
    let d;
    if (layer.get(e.to) - layer.get(e.from) > 1) {
      const over = Math.min(a.y, b.y) - bulge(e);
      d = `M${a.x + NODE_W / 2},${a.y} C${a.x + NODE_W / 2},${over} ${b.x + NODE_W / 2},${over} ${b.x + NODE_W / 2},${b.y}`;
    } else {
      const mid = (x1 + x2) / 2;
      d = `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`;
    }
    drawing.append(svg('path', { d, class: 'edge', 'marker-end': 'url(#arrow)' }));
  }
  for (const n of nodes) {
    const { x, y } = at.get(n.id);
    const group = svg('g', {
      class: `node state-${n.state}${n.id === focus ? ' focus' : ''}`,
      transform: `translate(${x},${y})`, 'data-task': n.id, 'data-state': n.state, tabindex: 0,
      onclick: () => onOpen && onOpen(n.id),
    }, svg('title', {}, `${n.type} (${n.ref || n.id}): ${n.state}`),
    svg('rect', { width: NODE_W, height: NODE_H, rx: 6 }),
    svg('text', { x: 10, y: 16, class: 'node-label' }, label(n)),
    svg('text', { x: 10, y: 30, class: 'node-state' }, `${n.state} · ${n.type}`));
    drawing.append(group);
  }
  return h('div', { class: 'dag-box' }, note ? h('p', { class: 'muted', id: 'graph-note' }, note) : null,
    h('div', { class: 'dag-scroll' }, drawing));
}
