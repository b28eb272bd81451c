// The dashboard: status every 2 s, reputation every 10 s, and the settings form.
import { makeApi, isNoAgent, isNotJoined } from './api.js';
import { drawChart } from './chart.js';

const api = makeApi();
const $ = (id) => document.getElementById(id);
const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];

let enabled = null;        // the master switch as the agent last reported it
let settings = null;       // the settings as the agent last returned them
let formDirty = false;     // the user is editing: do not overwrite the form
let agentUp = false;

// ---------- status ----------

function bytes(n) {
  if (n == null) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function showNoAgent(e) {
  agentUp = false;
  $('no-agent').hidden = false;
  $('join').hidden = true;
  $('no-agent-detail').textContent = e.message;
  document.body.dataset.agent = 'down';
  setBadge('disconnected', 'Agent not running');
  $('toggle').disabled = true;
}

function showJoin() {
  agentUp = false;
  $('no-agent').hidden = true;
  $('join').hidden = false;
  // Nothing to show or set before there is a node: only the join form.
  document.querySelector('main').hidden = true;
  $('toggle').hidden = true;
  document.body.dataset.agent = 'not-joined';
  setBadge('disconnected', 'Not joined');
  $('toggle').disabled = true;
}

function setBadge(look, text) {
  const b = $('state-badge');
  b.dataset.look = look;
  b.textContent = text;
}

function renderStatus(s) {
  agentUp = true;
  $('no-agent').hidden = true;
  $('join').hidden = true;
  document.querySelector('main').hidden = false;
  $('toggle').hidden = false;
  document.body.dataset.agent = 'up';
  enabled = !!(s.settings && s.settings.enabled);
  const look = !s.connected ? 'disconnected' : s.contributing ? 'contributing' : 'paused';
  setBadge(look, { contributing: 'Contributing', paused: 'Paused', disconnected: 'Not connected' }[look]);
  const t = $('toggle');
  t.disabled = false;
  t.textContent = enabled ? 'Pause contributing' : 'Resume contributing';
  t.dataset.enabled = String(enabled);
  $('node-id').textContent = s.node_id || '–';
  $('connected').textContent = s.connected ? 'connected' : 'not connected to the broker';
  const reasons = s.paused_reasons || [];
  $('paused-reasons').textContent = s.contributing ? 'contributing'
    : reasons.length ? `paused: ${reasons.join('; ')}` : 'paused';
  $('tasks-done').textContent = String(s.tasks_done ?? '–');
  const running = s.running || [];
  $('running').textContent = running.length
    ? running.map((r) => `${r.task_type} ${String(r.task_id).slice(0, 8)}`).join(', ')
    : 'nothing';
  const r = s.resources || {};
  $('cpu').textContent = r.cpu_usage_pct == null ? '–' : `${Number(r.cpu_usage_pct).toFixed(0)} %`;
  $('mem').textContent = r.mem_total_bytes ? `${bytes(r.mem_used_bytes)} of ${bytes(r.mem_total_bytes)}` : '–';
  $('agent-rss').textContent = bytes(r.agent_rss_bytes);
  if (s.settings && !formDirty && !settings) fillForm(s.settings);
}

async function pollStatus() {
  try {
    renderStatus(await api.status());
  } catch (e) {
    if (isNotJoined(e)) showJoin();
    else if (isNoAgent(e)) showNoAgent(e);
    else setBadge('disconnected', `Error: ${e.message}`);
  }
}

// ---------- join ----------

$('join-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const token = $('join-token').value.trim();
  const err = $('join-error');
  const button = $('join-button');
  if (!token.startsWith('ambient-join-v1.')) {
    err.textContent = 'That is not a join token: it should start with ambient-join-v1.';
    err.hidden = false;
    return;
  }
  err.hidden = true;
  button.disabled = true;
  button.textContent = 'Joining…';
  try {
    const joined = await api.join(token);
    setBadge('paused', `Joined as ${joined.node_id}; starting…`);
    $('join-token').value = '';
  } catch (e) {
    err.textContent = `${e.message}${e.error ? ` (${e.error})` : ''}`;
    err.hidden = false;
  } finally {
    button.disabled = false;
    button.textContent = 'Join';
  }
});

// ---------- reputation ----------

// µcredits (what the API counts in) as credits, e.g. 0.0042.
function credits(micro) {
  const c = Number(micro) / 1e6;
  return c === 0 ? '0' : c < 0.01 ? c.toPrecision(2) : c.toFixed(2);
}

async function pollReputation() {
  if (!agentUp) return;
  try {
    const rep = await api.reputation();
    const r = rep.reputation;
    $('rep-summary').textContent =
      `Score ${Number(r.score).toFixed(1)} of 100${r.trusted ? ' (trusted)' : ''} · ` +
      `${r.valid} valid, ${r.invalid} invalid, ${r.timeouts} timeouts, ${r.lost} lost` +
      (r.proofs_verified || r.proofs_rejected
        ? `, ${r.proofs_verified} proofs verified, ${r.proofs_rejected} rejected` : '') +
      ` · streak ${r.streak}`;
    $('rep-summary').classList.remove('muted');
    const c = rep.credits || { total: 0, today: 0, recent_average: 0 };
    $('credits-summary').textContent =
      `Credits earned: ${credits(c.today || 0)} today · ${credits(c.total)} in total · ` +
      `${credits(c.recent_average)} a day recently`;
    $('credits-summary').classList.toggle('muted', c.total === 0);
    drawChart($('rep-chart'), rep.history || []);
  } catch (e) {
    if (e.error === 'no_reputation_yet') {
      $('rep-summary').textContent = 'No reputation yet: it starts with your first judged task.';
      drawChart($('rep-chart'), []);
    } else if (!isNoAgent(e)) {
      $('rep-summary').textContent = `Cannot read the reputation: ${e.message}`;
    }
  }
}

// ---------- toggle ----------

$('toggle').addEventListener('click', async () => {
  const t = $('toggle');
  t.disabled = true;
  try {
    renderStatus(await api.toggle(!enabled));
    if (settings) { settings.enabled = enabled; if (!formDirty) fillForm(settings); }
  } catch (e) {
    if (isNoAgent(e)) showNoAgent(e); else showError(e);
  } finally {
    t.disabled = !agentUp;
  }
});

// ---------- settings ----------

const form = $('settings-form');

function windowRow(w) {
  const node = $('window-row').content.firstElementChild.cloneNode(true);
  const days = node.querySelector('.days');
  for (const d of DAYS) {
    const l = document.createElement('label');
    l.className = 'day';
    l.innerHTML = `<input type="checkbox" value="${d}"> ${d}`;
    l.firstChild.checked = (w.days || []).includes(d);
    days.append(l);
  }
  node.querySelector('[name=start]').value = w.start || '22:00';
  // A time input cannot show 24:00 (the end of a whole day); it shows 00:00 and readForm maps back.
  node.querySelector('[name=end]').value = w.end === '24:00' ? '00:00' : (w.end || '07:00');
  node.querySelector('.remove').addEventListener('click', () => { node.remove(); formDirty = true; });
  return node;
}

function fillForm(s) {
  settings = structuredClone(s);
  for (const name of ['enabled', 'idle_only', 'pause_on_battery', 'gpu_enabled']) {
    form.elements[name].checked = !!s[name];
  }
  form.elements.idle_minutes.value = s.idle_minutes;
  form.elements.cpu_max_cores.value = s.cpu_max_cores == null ? '' : s.cpu_max_cores;
  form.elements.cpu_duty_pct.value = s.cpu_duty_pct;
  $('duty-out').textContent = `${s.cpu_duty_pct} %`;
  form.elements.exclusive_apps.value = (s.exclusive_apps || []).join('\n');
  const list = $('windows');
  list.replaceChildren(...(s.time_windows || []).map(windowRow));
  formDirty = false;
}

function intOrRaw(v) {
  // Send what the user typed; the agent is the judge and says what is wrong with it.
  const n = Number(v);
  return v.trim() !== '' && Number.isInteger(n) ? n : v;
}

function readForm() {
  const out = { ...(settings || {}) };
  for (const name of ['enabled', 'idle_only', 'pause_on_battery', 'gpu_enabled']) {
    out[name] = form.elements[name].checked;
  }
  out.idle_minutes = intOrRaw(form.elements.idle_minutes.value);
  const cores = form.elements.cpu_max_cores.value.trim();
  out.cpu_max_cores = cores === '' ? null : intOrRaw(cores);
  out.cpu_duty_pct = intOrRaw(form.elements.cpu_duty_pct.value);
  out.exclusive_apps = form.elements.exclusive_apps.value.split('\n').map((x) => x.trim()).filter(Boolean);
  out.time_windows = [...document.querySelectorAll('#windows .window-row')].map((row) => {
    const start = row.querySelector('[name=start]').value;
    const end = row.querySelector('[name=end]').value;
    return {
      days: [...row.querySelectorAll('.days input:checked')].map((i) => i.value),
      start,
      // "00:00 to 00:00" means the whole day, which the agent spells 00:00 to 24:00.
      end: start === '00:00' && end === '00:00' ? '24:00' : end,
    };
  });
  return out;
}

function clearErrors() {
  $('settings-error').hidden = true;
  $('settings-error').textContent = '';
  for (const el of form.querySelectorAll('.bad-field')) el.classList.remove('bad-field');
}

function showError(e) {
  const box = $('settings-error');
  box.textContent = e.message || String(e);
  box.dataset.code = e.error || '';
  box.hidden = false;
  // The agent names the field first: "idle_minutes: must be 1-1440, got 0",
  // "time_windows[0].start: …". Mark it.
  const m = /^([a-z_]+)(?:\[(\d+)\])?(?:\.([a-z_]+))?:/.exec(e.message || '');
  if (!m) return;
  let el = null;
  if (m[1] === 'time_windows' && m[2] != null) {
    const row = document.querySelectorAll('#windows .window-row')[Number(m[2])];
    el = row && (m[3] === 'days' ? row.querySelector('.days') : row.querySelector(`[name=${m[3]}]`));
  } else {
    el = form.elements[m[1]];
  }
  if (el) el.classList.add('bad-field');
}

form.addEventListener('input', (ev) => {
  formDirty = true;
  $('settings-saved').hidden = true;
  if (ev.target.name === 'cpu_duty_pct') $('duty-out').textContent = `${ev.target.value} %`;
});

$('add-window').addEventListener('click', () => {
  $('windows').append(windowRow({ days: [...DAYS], start: '22:00', end: '07:00' }));
  formDirty = true;
});

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearErrors();
  $('save').disabled = true;
  try {
    const saved = await api.putSettings(readForm());
    fillForm(saved);
    $('settings-saved').hidden = false;
    pollStatus();
  } catch (e) {
    if (isNoAgent(e)) showNoAgent(e);
    showError(e);
  } finally {
    $('save').disabled = false;
  }
});

async function loadSettings() {
  if (!agentUp) return;
  try {
    fillForm(await api.getSettings());
    clearErrors();
  } catch (e) {
    if (!isNoAgent(e)) showError(e);
  }
}

// ---------- start ----------

api.agentInfo().then((i) => { if (i && i.control_path) $('control-path').textContent = i.control_path; });
await pollStatus();
await loadSettings();
await pollReputation();
setInterval(async () => {
  const wasUp = agentUp;
  await pollStatus();
  if (agentUp && !wasUp) { if (!formDirty) await loadSettings(); pollReputation(); }
}, 2000);
setInterval(pollReputation, 10000);
document.body.dataset.ready = 'true';
