// The reputation history as an SVG line: one point per judged event, coloured by its kind,
// on a fixed 0–100 score axis. Plain DOM, no library.
const NS = 'http://www.w3.org/2000/svg';
const W = 600, H = 200, L = 34, R = 10, T = 10, B = 24;

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

export function drawChart(svg, history) {
  svg.replaceChildren();
  const y = (score) => T + (H - T - B) * (1 - Math.max(0, Math.min(100, score)) / 100);
  for (const g of [0, 50, 100]) {
    svg.append(el('line', { x1: L, x2: W - R, y1: y(g), y2: y(g), class: 'grid' }));
    svg.append(el('text', { x: L - 6, y: y(g) + 4, class: 'axis', 'text-anchor': 'end' }, g));
  }
  if (!history.length) {
    svg.append(el('text', { x: W / 2, y: H / 2, class: 'empty', 'text-anchor': 'middle' }, 'No judged tasks yet'));
    svg.dataset.points = '0';
    return;
  }
  const n = history.length;
  const x = (i) => (n === 1 ? (L + W - R) / 2 : L + (W - L - R) * (i / (n - 1)));
  const pts = history.map((h, i) => `${x(i).toFixed(1)},${y(h.score).toFixed(1)}`).join(' ');
  svg.append(el('polyline', { points: pts, class: 'line' }));
  history.forEach((h, i) => {
    const c = el('circle', { cx: x(i).toFixed(1), cy: y(h.score).toFixed(1), r: 4, class: `pt ${h.kind}` });
    c.append(el('title', {}, `${h.kind} · score ${Number(h.score).toFixed(1)} · ${h.at}`));
    svg.append(c);
  });
  const first = new Date(history[0].at), last = new Date(history[n - 1].at);
  svg.append(el('text', { x: L, y: H - 6, class: 'axis' }, first.toLocaleString()));
  svg.append(el('text', { x: W - R, y: H - 6, class: 'axis', 'text-anchor': 'end' }, last.toLocaleString()));
  svg.dataset.points = String(n);
}
