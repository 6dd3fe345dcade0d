// stowage web view. Every string from the daemon goes into the page as
// text (textContent, dataset), never as markup.
'use strict';

const POLL_MS = 1000;
const PAGE = 50;
const COLORS = { Get: '#3b6ea5', List: '#8e44ad', Create: '#2f7d4f', Remove: '#c62828', Mount: '#d35400',
  Unmount: '#c98a00', Path: '#7f8c8d', Capabilities: '#95a5a6' };
const OTHER = ['#16a085', '#2c3e50', '#e84393', '#6c5ce7', '#00838f', '#a1887f'];

const state = { offset: 0, q: '', busy: false, painted: false, last: [] };

function $(id) { return document.getElementById(id); }

// el builds an element; children are nodes or strings (made text nodes).
function el(tag, cls, ...children) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return e;
}

function bytes(n) {
  if (n === undefined || n === null) return '';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i === 0 ? String(v) : v.toFixed(v < 10 ? 1 : 0)) + ' ' + u[i];
}

function when(iso) {
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function colorOf(op, i) { return COLORS[op] || OTHER[i % OTHER.length]; }

async function getJSON(path) {
  const r = await fetch(path, { cache: 'no-store', credentials: 'same-origin' });
  if (!r.ok) throw new Error(path + ': ' + r.status + ' ' + (await r.text()));
  return r.json();
}

function renderBackends(s) {
  const rows = s.backends.map(b => el('tr', null,
    el('td', null, b.backend), el('td', 'num', String(b.volumes)), el('td', 'num', String(b.mounts)),
    el('td', b.stale ? 'num stale' : 'num', String(b.stale))));
  rows.push(el('tr', null, el('th', null, 'all'), el('th', 'num', String(s.volumes)),
    el('th', 'num', String(s.backends.reduce((a, b) => a + b.mounts, 0))),
    el('th', 'num', String(s.backends.reduce((a, b) => a + b.stale, 0)))));
  $('backends').tBodies[0].replaceChildren(...rows);
}

function renderFindings(s) {
  const checked = s.checked_at ? 'checked ' + when(s.checked_at) : 'checking…';
  $('checked').textContent = s.check_error ? 'check failed: ' + s.check_error : checked;
  const has = s.findings.length > 0;
  $('findings').hidden = !has;
  $('nofindings').hidden = has || !s.checked_at;
  $('findings').tBodies[0].replaceChildren(...s.findings.map(f => {
    const tr = el('tr', null,
      el('td', 'kind', f.kind),
      el('td', 'name', f.volume || '—'),
      el('td', null, f.meaning, el('span', 'detail', f.detail)),
      el('td', null, el('span', 'fix', f.fix)));
    tr.dataset.kind = f.kind;
    tr.dataset.volume = f.volume || '';
    return tr;
  }));
}

function renderFailed(s) {
  const has = s.failed.length > 0;
  $('failed').hidden = !has;
  $('nofailed').hidden = has;
  $('failed').tBodies[0].replaceChildren(...s.failed.map(f => el('tr', null,
    el('td', null, when(f.at)), el('td', null, f.op),
    el('td', 'num', (f.duration_s * 1000).toFixed(1) + ' ms'), el('td', 'err', f.error))));
}

// chart draws one line per operation on a canvas; pick chooses the value.
function chart(canvas, series, ops, pick, fmt) {
  const ctx = canvas.getContext('2d');
  const W = canvas.width, H = canvas.height, L = 44, B = 18, T = 8, R = 8;
  ctx.clearRect(0, 0, W, H);
  let tmin = Infinity, tmax = -Infinity, vmax = 0;
  for (const op of ops) {
    for (const p of series[op]) {
      const t = Date.parse(p.t);
      tmin = Math.min(tmin, t); tmax = Math.max(tmax, t);
      vmax = Math.max(vmax, pick(p));
    }
  }
  ctx.strokeStyle = '#dde3ea'; ctx.fillStyle = '#5f6b7a'; ctx.font = '10px system-ui, sans-serif';
  ctx.lineWidth = 1;
  if (!isFinite(tmin)) { ctx.fillText('no requests yet', L, H / 2); return; }
  if (vmax === 0) vmax = 1;
  tmin = Math.min(tmin, tmax - 60000); // at least a minute wide, so a fresh daemon's few points do not fill it
  const top = niceCeil(vmax);
  for (let i = 0; i <= 4; i++) {
    const y = T + (H - T - B) * (1 - i / 4);
    ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(W - R, y); ctx.stroke();
    ctx.fillText(fmt(top * i / 4), 2, y + 3);
  }
  const span = Math.max(tmax - tmin, 1);
  ctx.fillText('-' + Math.round((tmax - tmin) / 1000) + ' s', L, H - 4);
  ctx.fillText('now', W - R - 18, H - 4);
  ops.forEach((op, i) => {
    const pts = series[op];
    ctx.strokeStyle = colorOf(op, i); ctx.lineWidth = 1.5;
    ctx.beginPath();
    pts.forEach((p, j) => {
      const x = L + (W - L - R) * (Date.parse(p.t) - tmin) / span;
      const y = T + (H - T - B) * (1 - pick(p) / top);
      if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  });
}

function niceCeil(v) {
  const e = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 6, 8, 10]) if (v <= m * e) return m * e;
  return 10 * e;
}

function renderCharts(s) {
  const ops = Object.keys(s.series).filter(op => s.series[op].some(p => p.rate > 0)).sort();
  chart($('rate'), s.series, ops, p => p.rate, v => v.toFixed(v < 10 ? 1 : 0));
  chart($('latency'), s.series, ops, p => p.p99 * 1000, v => v.toFixed(v < 10 ? 1 : 0));
  $('legend').replaceChildren(...ops.map((op, i) => {
    const sw = el('span', 'sw');
    sw.style.background = colorOf(op, i);
    const last = s.series[op][s.series[op].length - 1];
    return el('span', null, sw, op + ' ' + (last ? last.rate.toFixed(1) + '/s' : ''));
  }));
}

function optionList(v) {
  const box = el('div', 'opts');
  for (const o of v.options.concat(v.details)) {
    const line = el('span', o.secret ? 'opt secret' : 'opt', el('span', 'k', o.name + '='), el('span', 'v', o.value));
    if (o.file) line.append(el('span', 'tag', 'file name'));
    if (o.secret) line.append(el('span', 'tag', 'secret'));
    box.append(line);
  }
  return box;
}

function usageCell(v) {
  const td = el('td', 'usage');
  if (v.used_bytes === undefined) {
    td.append(el('span', 'usagetext', 'no cheap usage for this backend'));
    return td;
  }
  const bar = el('div', 'bar');
  const fill = el('div', 'fill');
  bar.append(fill);
  let text = bytes(v.used_bytes);
  if (v.size_limit_bytes) {
    const pct = Math.min(100, 100 * v.used_bytes / v.size_limit_bytes);
    fill.style.width = pct.toFixed(1) + '%';
    if (pct >= 90) bar.classList.add('full'); else if (pct >= 75) bar.classList.add('warn');
    text += ' of ' + bytes(v.size_limit_bytes) + ' (' + pct.toFixed(0) + '%)';
    bar.dataset.pct = pct.toFixed(2);
  } else {
    text += ', no limit';
  }
  bar.dataset.used = String(v.used_bytes);
  td.append(bar, el('span', 'usagetext', text));
  return td;
}

function renderVolumes(p) {
  $('count').textContent = p.matched === p.total ? p.total + ' in all' : p.matched + ' of ' + p.total + ' match';
  const end = Math.min(p.offset + p.volumes.length, p.matched);
  $('range').textContent = p.matched ? (p.offset + 1) + '–' + end + ' of ' + p.matched : 'none';
  $('prev').disabled = p.offset === 0;
  $('next').disabled = end >= p.matched;
  $('volumes').tBodies[0].replaceChildren(...p.volumes.map(v => {
    const stale = el('td', null);
    if (v.stale > 0) {
      stale.append(el('span', 'stale', v.stale + ' from before the last reboot'), el('span', 'detail', 'fix: '),
        el('span', 'fix', v.stale_fix));
    } else {
      stale.append('0');
    }
    const name = el('td', 'name', v.name);
    if (v.problem) name.append(el('span', 'problem', v.problem));
    const tr = el('tr', null, name, el('td', null, v.backend), usageCell(v), el('td', 'num', String(v.mounts)),
      stale, el('td', null, when(v.created_at)), el('td', null, optionList(v)));
    tr.dataset.volume = v.name;
    return tr;
  }));
}

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try {
    const qs = new URLSearchParams({ offset: String(state.offset), limit: String(PAGE), q: state.q });
    const [s, p] = await Promise.all([getJSON('api/summary'), getJSON('api/volumes?' + qs)]);
    if (p.offset > 0 && p.offset >= p.matched) { state.offset = Math.max(0, p.matched - PAGE); }
    // Redraw a part only when it changed, so a selection in it survives.
    const parts = [[renderBackends, [s.backends, s.volumes]], [renderFindings, [s.findings, s.checked_at, s.check_error]],
      [renderFailed, s.failed], [renderVolumes, p]];
    parts.forEach(([render, data], i) => {
      const key = JSON.stringify(data);
      if (state.last[i] !== key) {
        state.last[i] = key;
        render(render === renderVolumes ? p : s);
      }
    });
    renderCharts(s);
    if (!state.painted) {
      state.painted = true;
      performance.mark('stowage-first-rows'); // read by make bench-ui
    }
    $('status').textContent = 'live · updated ' + new Date(s.now).toLocaleTimeString();
    $('status').classList.remove('down');
  } catch (e) {
    $('status').textContent = 'daemon not answering (' + e.message + '); retrying';
    $('status').classList.add('down');
  } finally {
    state.busy = false;
  }
}

function start() {
  let typing;
  $('filter').addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.q = $('filter').value; state.offset = 0; refresh(); }, 200);
  });
  $('prev').addEventListener('click', () => { state.offset = Math.max(0, state.offset - PAGE); refresh(); });
  $('next').addEventListener('click', () => { state.offset += PAGE; refresh(); });
  refresh();
  setInterval(refresh, POLL_MS);
}

document.addEventListener('DOMContentLoaded', start);
