// The Ambient VCP web console: one ES module, no framework, no build step.
//
// It talks to the REST API of the coordinator that served it, with the API key the user typed
// in (kept in this tab's sessionStorage, sent as `Authorization: Bearer`). Every value from the
// API reaches the page through textContent or an attribute, never as HTML. The live task list
// reads GET /api/v1/events with fetch() and parses the server-sent events here, because
// EventSource cannot send an Authorization header. Pages are hash routes: #/submit, #/tasks,
// #/task/{id}, #/nodes, #/account.

const API = new URL('../api/v1/', location.href);
const KEY = 'ambient.console.key';
const SENT = 'ambient.console.sent.';
/** Strings longer than this are shortened in the JSON shown, and put back when it is sent. */
const LONG = 4096;
const TERMINAL = new Set(['completed', 'failed', 'expired', 'cancelled']);

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes). */
function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c !== undefined && c !== null) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function show(e, visible) { e.hidden = !visible; }

const shortId = (id) => String(id).slice(0, 8);
const when = (t) => (t ? new Date(t).toLocaleString() : '—');
const clock = (t) => (t ? new Date(t).toLocaleTimeString() : '—');

/** µcredits as credits with six decimals, as the CLI prints them. */
function credits(micro) {
  if (micro === undefined || micro === null) return '—';
  const n = BigInt(micro);
  const sign = n < 0n ? '-' : '';
  const m = n < 0n ? -n : n;
  return `${sign}${m / 1000000n}.${String(m % 1000000n).padStart(6, '0')}`;
}

const MiB = (bytes) => `${(bytes / (1 << 20)).toFixed(0)} MiB`;

// ---------------------------------------------------------------- the API

let key = sessionStorage.getItem(KEY);

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error || 'http_error';
    this.problems = Array.isArray(body?.problems) ? body.problems : [];
  }
}

/** One request to the API with the key; the JSON answer, or an ApiError. */
async function api(method, path, body, withKey = key) {
  const headers = { Authorization: `Bearer ${withKey}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let r;
  try {
    r = await fetch(new URL(path, API), {
      method,
      headers,
      body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, { error: 'unreachable', message: `the coordinator did not answer (${e.message})` });
  }
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: 'bad_response', message: text.slice(0, 200) };
  }
  if (!r.ok) {
    const err = new ApiError(r.status, data);
    if (r.status === 401 && withKey === key && key) signOut(`The coordinator refused the key: ${err.message}.`);
    throw err;
  }
  return data;
}

/** An error for a person: its code and message, or (for a refused submission) each field. */
function describe(err) {
  const problems = err.problems || [];
  if (!problems.length) return [err.status ? `${err.code}: ${err.message}` : err.message];
  return [`${err.code}: ${problems.length === 1 ? 'one thing' : `${problems.length} things`} to fix`,
    ...problems.map((p) => {
      const example = p.example === undefined ? '' : ` For example ${JSON.stringify(p.example)}.`;
      return `${p.field}: ${p.problem.replace('_', ' ')}. Expected: ${p.expected}${example}`;
    })];
}

/** Text with `backquoted` parts as code elements. */
function withCode(text) {
  return String(text).split('`').map((part, i) => (i % 2 ? h('code', { text: part }) : part));
}

function showError(box, err) {
  const [first, ...rest] = describe(err);
  box.replaceChildren(h('p', {}, withCode(first)));
  if (rest.length) box.append(h('ul', {}, rest.map((l) => h('li', {}, withCode(l)))));
  show(box, true);
}

// ---------------------------------------------------------------- sign in and out

async function signIn(candidate) {
  // GET /account checks the key: 401 if it is not one; 404 is a key without a credit account.
  try {
    const acct = await api('GET', 'account', undefined, candidate);
    return acct.account;
  } catch (e) {
    if (e.status === 404) return '';
    throw e;
  }
}

function signOut(message) {
  key = null;
  sessionStorage.removeItem(KEY);
  stopStream();
  tasks.clear();
  $('tasks-body').replaceChildren();
  $('account-name').textContent = '';
  show($('nav'), false);
  show($('who'), false);
  if (message) {
    $('signin-error').textContent = message;
    show($('signin-error'), true);
  }
  location.hash = '#/signin';
  route();
}

$('signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('api-key');
  const candidate = input.value.trim();
  const error = $('signin-error');
  show(error, false);
  input.removeAttribute('aria-invalid');
  if (!candidate) {
    error.textContent = 'Type your API key.';
    show(error, true);
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  try {
    const name = await signIn(candidate);
    key = candidate;
    sessionStorage.setItem(KEY, key);
    input.value = '';
    signedIn(name);
    location.hash = '#/tasks';
  } catch (e) {
    error.textContent = e.status === 401
      ? `This API key was not accepted (${e.message}). Check it and try again.`
      : `Could not sign in: ${e.message}`;
    show(error, true);
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  }
});

function signedIn(name) {
  $('account-name').textContent = name ? `Signed in as ${name}` : 'Signed in';
  show($('nav'), true);
  show($('who'), true);
  startStream();
}

$('sign-out').addEventListener('click', () => signOut(''));

// ---------------------------------------------------------------- the event stream

let streamCtl = null;

function setLive(state, text) {
  const live = $('live');
  live.dataset.state = state;
  live.textContent = text;
}

function stopStream() {
  if (streamCtl) streamCtl.abort();
  streamCtl = null;
  setLive('off', 'Not connected');
}

/** Reads GET /api/v1/events until signed out, reconnecting with backoff when it ends. */
async function startStream() {
  stopStream();
  const ctl = new AbortController();
  streamCtl = ctl;
  let delay = 1000;
  while (!ctl.signal.aborted) {
    try {
      setLive('connecting', 'Connecting…');
      const r = await fetch(new URL('events', API), {
        headers: { Authorization: `Bearer ${key}`, Accept: 'text/event-stream' },
        signal: ctl.signal,
        cache: 'no-store',
      });
      if (!r.ok) {
        const body = await r.json().catch(() => null);
        const err = new ApiError(r.status, body);
        if (r.status === 401) {
          signOut(`The coordinator refused the key: ${err.message}.`);
          return;
        }
        throw err;
      }
      setLive('live', 'Live');
      delay = 1000;
      await readEvents(r.body, onEvent);
      // The server ends a stream after a while, or when it stops: take a new one.
    } catch (e) {
      if (ctl.signal.aborted) return;
      setLive('down', `Reconnecting: ${e.message}`);
    }
    await new Promise((resolve) => {
      const t = setTimeout(resolve, delay);
      ctl.signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
    });
    delay = Math.min(delay * 2, 30000);
  }
}

/** Parses a text/event-stream body, calling onEvent(name, data) for each event. */
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let name = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, '');
      buf = buf.slice(nl + 1);
      if (line === '') {
        if (data.length) onEvent(name || 'message', data.join('\n'));
        name = '';
        data = [];
      } else if (!line.startsWith(':')) {
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        const v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
        if (field === 'event') name = v;
        else if (field === 'data') data.push(v);
      }
    }
  }
}

/** Task summaries by id, as the stream last told them. */
const tasks = new Map();

function onEvent(name, data) {
  let value;
  try {
    value = JSON.parse(data);
  } catch {
    return;
  }
  if (name === 'snapshot') {
    // A snapshot is the whole window: tasks that left it are not kept, out of date.
    tasks.clear();
    for (const t of value) tasks.set(t.task_id, t);
    renderTasks();
  } else if (name === 'task') {
    const before = tasks.get(value.task_id);
    tasks.set(value.task_id, value);
    renderTasks();
    if (!before || before.status !== value.status) {
      $('tasks-live').textContent = `Task ${shortId(value.task_id)} is ${value.status}${value.status === 'completed' ? '.' : ''}`;
    }
    if (current.page === 'task' && current.arg === value.task_id) showTask(value.task_id, false);
  } else if (name === 'error') {
    setLive('down', `Stream error: ${value.message}`);
  }
}

// ---------------------------------------------------------------- tasks page

function progressCell(t) {
  if (!t.progress) return h('td', { text: '—' });
  const { done, total } = t.progress;
  return h('td', {},
    h('progress', { max: total, value: done, 'aria-label': `${done} of ${total} done` }),
    h('span', { class: 'num', text: ` ${done}/${total}` }));
}

function statusBadge(status) {
  return h('span', { class: 'badge', dataset: { status }, text: status });
}

function renderTasks() {
  const body = $('tasks-body');
  const rows = [...tasks.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  const existing = new Map([...body.rows].map((r) => [r.dataset.task, r]));
  let before = body.firstElementChild;
  for (const t of rows) {
    const cells = [
      h('td', {}, h('a', { href: `#/task/${t.task_id}`, 'aria-label': `Task ${t.task_id}` }, h('code', { text: shortId(t.task_id) }))),
      h('td', { text: t.task_type }),
      h('td', {}, statusBadge(t.status)),
      progressCell(t),
      h('td', { class: 'detail', text: t.error || t.status_reason || '' }),
      h('td', { text: clock(t.updated_at) }),
    ];
    let row = existing.get(t.task_id);
    const sig = JSON.stringify(t);
    if (!row) {
      row = h('tr', { dataset: { task: t.task_id } });
      body.insertBefore(row, before);
    } else if (row !== before) {
      body.insertBefore(row, before);
    }
    if (row.dataset.sig !== sig) {
      // Keep a focused link focused: only the cells of a changed row are replaced.
      const focused = row.contains(document.activeElement);
      row.replaceChildren(...cells);
      row.dataset.sig = sig;
      row.dataset.status = t.status;
      if (focused) row.querySelector('a').focus();
    }
    before = row.nextElementSibling;
  }
  show($('tasks-empty'), rows.length === 0);
}

// ---------------------------------------------------------------- task page

function fact(dl, term, value) {
  if (value === undefined || value === null || value === '') return;
  dl.append(h('dt', { text: term }), h('dd', {}, value));
}

let proofShown = null;

async function showTask(id, focus = true) {
  $('task-id').textContent = id;
  let t;
  try {
    t = await api('GET', `tasks/${encodeURIComponent(id)}`);
  } catch (e) {
    showPageError(e);
    return;
  }
  if (current.page !== 'task' || current.arg !== id) return;
  const dl = $('task-facts');
  dl.replaceChildren();
  fact(dl, 'Kind', t.task_type);
  fact(dl, 'Status', statusBadge(t.status));
  if (t.progress) {
    fact(dl, 'Progress', h('span', {}, h('progress', { max: t.progress.total, value: t.progress.done }),
      ` ${t.progress.done} of ${t.progress.total}`));
  }
  fact(dl, 'Waiting because', t.status_reason);
  fact(dl, 'Error', t.error);
  if (t.attempts) fact(dl, 'Attempts', String(t.attempts));
  fact(dl, 'Nodes', t.assigned_nodes.length ? t.assigned_nodes.join(', ') : 'none yet');
  fact(dl, 'Submitted', when(t.created_at));
  fact(dl, 'Updated', when(t.updated_at));
  if (t.cost) {
    const charged = t.cost.charged === null || t.cost.charged === undefined
      ? 'not yet charged' : `charged ${credits(t.cost.charged)}`;
    fact(dl, 'Cost (credits)', `reserved ${credits(t.cost.estimated)}, ${charged}`);
  }
  const sent = sessionStorage.getItem(SENT + id);
  show($('task-inputs-box'), !!sent);
  $('task-inputs').textContent = sent || '';
  showResult(t);
  show($('cancel'), !TERMINAL.has(t.status));
  if (t.proof_id && proofShown !== t.proof_id) await showProof(t.proof_id);
  if (!t.proof_id) {
    proofShown = null;
    show($('task-proof'), false);
  }
  if (focus) $('task-h').focus();
}

/** The agreed output, an image when it carries one, and the whole result under a disclosure. */
function showResult(t) {
  const r = t.result;
  const has = r !== null && r !== undefined;
  const output = has && typeof r === 'object' && 'output' in r ? r.output : r;
  // Long strings (an image in base64) are cut here; the whole result is below.
  const cut = (k, v) => (typeof v === 'string' && v.length > 256 ? `${v.slice(0, 64)}… (${v.length} characters)` : v);
  $('task-output').textContent = has
    ? (typeof output === 'string' ? output : JSON.stringify(output, cut, 2))
    : (TERMINAL.has(t.status) ? 'No output.' : 'Not finished yet.');
  $('task-result').textContent = has ? JSON.stringify(r, null, 2) : '';
  show($('task-result-box'), has);
  const box = $('task-image');
  box.replaceChildren();
  const canvas = output && typeof output.image === 'string' ? pnmCanvas(output.image) : null;
  if (canvas) {
    canvas.setAttribute('role', 'img');
    canvas.setAttribute('aria-label', `The output image, ${canvas.width}×${canvas.height}`);
    box.append(canvas);
  }
  show(box, !!canvas);
}

/** A canvas showing a binary PGM (P5) or PPM (P6) image in base64, or null if it is not one. */
function pnmCanvas(b64) {
  let bytes;
  try {
    bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
  const fields = [];
  let i = 0;
  while (fields.length < 4 && i < bytes.length) {
    const c = bytes[i];
    if (c === 0x23) { while (i < bytes.length && bytes[i] !== 0x0a) i++; continue; } // # comment
    if (c === 0x20 || (c >= 0x09 && c <= 0x0d)) { i++; continue; }
    let tok = '';
    while (i < bytes.length && bytes[i] > 0x20) tok += String.fromCharCode(bytes[i++]);
    fields.push(tok);
  }
  i++; // the one whitespace byte before the pixels
  const [magic, w, h, max] = [fields[0], Number(fields[1]), Number(fields[2]), Number(fields[3])];
  const channels = magic === 'P5' ? 1 : magic === 'P6' ? 3 : 0;
  if (!channels || max !== 255 || !(w > 0 && h > 0 && w * h <= 4096 * 4096)) return null;
  if (bytes.length - i < w * h * channels) return null;
  const canvas = document.createElement('canvas');
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(w, h);
  for (let p = 0; p < w * h; p++) {
    const src = i + p * channels;
    img.data[p * 4] = bytes[src];
    img.data[p * 4 + 1] = bytes[src + (channels === 3 ? 1 : 0)];
    img.data[p * 4 + 2] = bytes[src + (channels === 3 ? 2 : 0)];
    img.data[p * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

let proof = null;

async function showProof(proofId) {
  const box = $('task-proof');
  try {
    proof = await api('GET', `proofs/${encodeURIComponent(proofId)}`);
  } catch (e) {
    showPageError(e);
    return;
  }
  proofShown = proofId;
  const dl = $('proof-facts');
  dl.replaceChildren();
  fact(dl, 'Proof', h('code', { text: proof.proof_id }));
  if (proof.model_sha256) {
    fact(dl, 'Model', h('code', { class: 'wrap', text: proof.model_sha256 }));
    fact(dl, 'Circuit', `${proof.n} constraints, ${proof.frac_bits} fractional bits`);
  } else {
    fact(dl, 'Circuit', `${proof.circuit}, n = ${proof.n}`);
  }
  fact(dl, 'Public inputs', h('ol', {}, proof.public_inputs.map((p) => h('li', {}, h('code', { text: p })))));
  fact(dl, 'Checked by the coordinator', when(proof.verified_at));
  fact(dl, 'Proof bytes (base64)', h('code', { class: 'wrap', text: proof.proof }));
  $('verify-answer').textContent = '';
  delete $('verify-answer').dataset.valid;
  show(box, true);
}

$('verify').addEventListener('click', async () => {
  const answer = $('verify-answer');
  answer.textContent = 'Verifying…';
  delete answer.dataset.valid;
  try {
    // A proved inference's keys are its model's; a zk_proof's, its circuit's at its size.
    const keys = proof.model_sha256
      ? { model_sha256: proof.model_sha256 }
      : { circuit: proof.circuit, n: proof.n };
    const r = await api('POST', 'proofs/verify', {
      ...keys, public_inputs: proof.public_inputs, proof: proof.proof,
    });
    answer.dataset.valid = String(r.valid);
    answer.textContent = r.valid
      ? 'Valid: the coordinator checked the proof against its public inputs again.'
      : 'Not valid: the proof does not verify against these public inputs.';
  } catch (e) {
    answer.textContent = `Could not verify: ${describe(e).join(' ')}`;
  }
});

$('cancel').addEventListener('click', async () => {
  try {
    await api('DELETE', `tasks/${encodeURIComponent(current.arg)}`);
    showTask(current.arg, false);
  } catch (e) {
    showPageError(e);
  }
});

// ---------------------------------------------------------------- submit page

let templates = null;
let source = null; // a template, or 'wasm'
const longStrings = [];
let wasmBase64 = null;
/** Files chosen for template parameters, in base64, by parameter name. */
const fileParams = new Map();

/** JSON text of `value` with every long string replaced by a marker (kept in longStrings). */
function shorten(value) {
  longStrings.length = 0;
  const walk = (v) => {
    if (typeof v === 'string' && v.length > LONG) {
      longStrings.push(v);
      return `«long string #${longStrings.length}: ${v.length} characters, sent whole»`;
    }
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return JSON.stringify(walk(value), null, 2);
}

/** The value the JSON shown stands for: markers put back. */
function lengthen(value) {
  const walk = (v) => {
    if (typeof v === 'string') {
      const m = /^«long string #(\d+): \d+ characters, sent whole»$/.exec(v);
      return m && longStrings[Number(m[1]) - 1] !== undefined ? longStrings[Number(m[1]) - 1] : v;
    }
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(value);
}

function setBody(value) {
  $('body').value = shorten(value);
  show($('body-error'), false);
}

async function openSubmit() {
  if (templates === null) {
    try {
      templates = await api('GET', 'templates');
      show($('templates-note'), false);
    } catch (e) {
      templates = [];
      $('templates-note').textContent = e.status === 404
        ? 'This coordinator offers no templates.'
        : `Could not load the templates: ${e.message}`;
      show($('templates-note'), true);
    }
    const list = $('source-list');
    list.replaceChildren();
    for (const t of templates) {
      const id = `src-${t.name}`;
      list.append(h('div', { class: 'choice' },
        h('input', { type: 'radio', name: 'source', id, value: t.name }),
        h('label', { for: id }, t.title || t.name, ' ', h('span', { class: 'kind', text: t.task_type }))));
    }
    list.append(h('div', { class: 'choice' },
      h('input', { type: 'radio', name: 'source', id: 'src-wasm', value: '' }),
      h('label', { for: 'src-wasm' }, 'A wasm module from a file', ' ', h('span', { class: 'kind', text: 'wasm_execution' }))));
    for (const r of list.querySelectorAll('input[type=radio]')) {
      r.addEventListener('change', () => pickSource(r.value));
    }
    const first = list.querySelector('input[type=radio]');
    first.checked = true;
    pickSource(first.value);
  }
}

function pickSource(name) {
  const t = templates.find((x) => x.name === name);
  source = t || 'wasm';
  fileParams.clear();
  show($('params-form'), !!t);
  show($('wasm-form'), !t);
  $('sent').textContent = '';
  if (t) {
    $('tpl-title').textContent = t.title || t.name;
    $('tpl-desc').replaceChildren(...withCode(t.description || ''));
    $('tpl-kind').textContent = t.task_type;
    $('tpl-output').replaceChildren(...(t.expected_output ? withCode(`Expect: ${t.expected_output}`) : []));
    const params = $('params');
    params.replaceChildren();
    for (const p of t.params || []) {
      const id = `param-${p.name}`;
      const help = `${id}-help`;
      // A long string (an image, in base64) is replaced by a file rather than typed.
      const kind = typeof p.default === 'string' && p.default.length > LONG ? 'file' : typeof p.default;
      let input;
      if (kind === 'boolean') {
        input = h('input', { type: 'checkbox', id, name: p.name, 'aria-describedby': help, checked: p.default });
      } else if (kind === 'file') {
        input = h('input', { type: 'file', id, name: p.name, 'aria-describedby': help });
      } else {
        input = h('input', {
          type: 'text', id, name: p.name, 'aria-describedby': help, spellcheck: 'false',
          inputmode: kind === 'number' ? 'decimal' : undefined,
          value: kind === 'string' ? p.default : JSON.stringify(p.default),
        });
      }
      input.dataset.kind = kind;
      if (kind === 'file') {
        input.addEventListener('change', async () => {
          const f = input.files[0];
          if (f) fileParams.set(p.name, bytesToBase64(new Uint8Array(await f.arrayBuffer())));
          else fileParams.delete(p.name);
          render();
        });
      } else {
        input.addEventListener(kind === 'boolean' ? 'change' : 'input', () => renderSoon());
      }
      const dflt = kind === 'file'
        ? `Default: the template's own (${p.default.length} characters of base64); choose a file to send another, in base64.`
        : `Default: ${JSON.stringify(p.default)}.`;
      params.append(h('div', { class: 'field' }, h('label', { for: id, text: p.name }), input,
        h('p', { class: 'help', id: help }, withCode(`${p.description || ''} ${dflt}`))));
    }
    render();
  } else {
    wasmBody();
  }
}

let renderTimer = null;
function renderSoon() {
  clearTimeout(renderTimer);
  renderTimer = setTimeout(render, 250);
}

/** The parameters that differ from their defaults, parsed; or null with the bad fields marked. */
function paramValues(t) {
  const set = {};
  let ok = true;
  for (const p of t.params || []) {
    const input = $(`param-${p.name}`);
    input.removeAttribute('aria-invalid');
    let v;
    try {
      if (input.dataset.kind === 'file') {
        if (fileParams.has(p.name)) set[p.name] = fileParams.get(p.name);
        continue;
      } else if (input.dataset.kind === 'boolean') v = input.checked;
      else if (input.dataset.kind === 'string') v = input.value;
      else if (input.dataset.kind === 'number') {
        v = Number(input.value.trim());
        if (input.value.trim() === '' || !Number.isFinite(v)) throw new Error('not a number');
      } else v = JSON.parse(input.value);
    } catch {
      input.setAttribute('aria-invalid', 'true');
      ok = false;
      continue;
    }
    if (JSON.stringify(v) !== JSON.stringify(p.default)) set[p.name] = v;
  }
  return ok ? set : null;
}

let renderSeq = 0;
async function render() {
  const t = source;
  if (!t || t === 'wasm') return;
  const set = paramValues(t);
  if (set === null) {
    showError($('body-error'), new Error('Some parameters are not valid: fix the fields marked.'));
    return;
  }
  const seq = ++renderSeq;
  try {
    const r = await api('POST', `templates/${encodeURIComponent(t.name)}/render`, { set });
    if (seq !== renderSeq || source !== t) return;
    setBody(r.submission);
  } catch (e) {
    if (seq !== renderSeq) return;
    for (const p of e.problems || []) {
      const name = p.field.replace(/^set\./, '');
      const input = document.getElementById(`param-${name}`);
      if (input) input.setAttribute('aria-invalid', 'true');
    }
    showError($('body-error'), e);
  }
}

function bytesToBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

$('wasm-file').addEventListener('change', async () => {
  const file = $('wasm-file').files[0];
  const info = $('wasm-file-info');
  wasmBase64 = null;
  if (!file) {
    info.textContent = '';
    wasmBody();
    return;
  }
  const bytes = new Uint8Array(await file.arrayBuffer());
  const magic = bytes.length >= 4 && bytes[0] === 0 && bytes[1] === 0x61 && bytes[2] === 0x73 && bytes[3] === 0x6d;
  if (!magic) {
    info.textContent = `${file.name} is not a WebAssembly module (it does not start with \\0asm).`;
    $('wasm-file').setAttribute('aria-invalid', 'true');
  } else {
    $('wasm-file').removeAttribute('aria-invalid');
    wasmBase64 = bytesToBase64(bytes);
    info.textContent = `${file.name}: ${bytes.length} bytes.`;
  }
  wasmBody();
});

for (const id of ['wasm-inputs', 'wasm-min-nodes', 'wasm-time']) $(id).addEventListener('input', () => wasmBody());

function wasmBody() {
  let inputs;
  const box = $('wasm-inputs');
  try {
    inputs = JSON.parse(box.value || '{}');
    box.removeAttribute('aria-invalid');
  } catch (e) {
    box.setAttribute('aria-invalid', 'true');
    showError($('body-error'), new Error(`The inputs are not JSON: ${e.message}`));
    return;
  }
  setBody({
    task_type: 'wasm_execution',
    wasm_module: wasmBase64 ?? '(choose a .wasm file)',
    inputs,
    requirements: {
      min_nodes: Number($('wasm-min-nodes').value) || 1,
      max_execution_time_sec: Number($('wasm-time').value) || 30,
    },
  });
}

$('send-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const errBox = $('body-error');
  const sent = $('sent');
  show(errBox, false);
  sent.textContent = '';
  let body;
  try {
    body = lengthen(JSON.parse($('body').value));
  } catch (e) {
    showError(errBox, new Error(`This is not JSON: ${e.message}`));
    $('body').focus();
    return;
  }
  $('send').disabled = true;
  try {
    const t = await api('POST', 'tasks', JSON.stringify(body));
    // The task exists now: a full storage must not make it look refused.
    try { sessionStorage.setItem(SENT + t.task_id, $('body').value); } catch { /* shown without inputs */ }
    tasks.set(t.task_id, { ...t, result: undefined, ...(tasks.get(t.task_id) || {}) });
    renderTasks();
    sent.replaceChildren('Submitted: ', h('a', { href: `#/task/${t.task_id}`, id: 'sent-link' },
      'task ', h('code', { text: shortId(t.task_id) })), ` (${t.status}). It shows in `,
    h('a', { href: '#/tasks', text: 'Tasks' }), '.');
  } catch (e) {
    showError(errBox, e);
  } finally {
    $('send').disabled = false;
  }
});

// ---------------------------------------------------------------- nodes page

let nodesTimer = null;

async function showNodes() {
  let nodes;
  try {
    nodes = await api('GET', 'nodes');
  } catch (e) {
    showPageError(e);
    return;
  }
  const body = $('nodes-body');
  body.replaceChildren(...nodes.map((n) => {
    const hl = n.health;
    const rep = n.reputation || {};
    return h('tr', { dataset: { node: n.node_id, state: n.state } },
      h('th', { scope: 'row' }, h('code', { text: n.node_id })),
      h('td', {}, h('span', { class: 'badge', dataset: { status: n.state }, text: n.state })),
      h('td', { class: 'num', text: n.health_score.toFixed(0) }),
      h('td', { class: 'num' }, `${rep.score === undefined ? '—' : rep.score.toFixed(1)}`,
        rep.trusted ? h('span', { class: 'kind', text: ' trusted' }) : ''),
      h('td', { text: `${rep.valid ?? 0} valid, ${rep.invalid ?? 0} invalid, ${rep.timeouts ?? 0} timed out, ${rep.lost ?? 0} lost${rep.proofs_verified ? `, ${rep.proofs_verified} proofs` : ''}` }),
      h('td', { class: 'num', text: hl ? `${hl.running_tasks}/${hl.max_concurrent_tasks}` : String(n.active_assignments) }),
      h('td', { text: hl ? hl.supported_task_types.join(', ') : '—' }),
      h('td', { class: 'num', text: hl ? `${hl.cpu_usage_pct.toFixed(0)}% of ${hl.cpu_count}` : '—' }),
      h('td', { class: 'num', text: hl ? `${MiB(hl.mem_available_bytes)} of ${MiB(hl.mem_total_bytes)}` : '—' }),
      h('td', { text: clock(n.last_seen) }));
  }));
  show($('nodes-empty'), nodes.length === 0);
  $('nodes-at').textContent = `${nodes.length} node(s), read at ${new Date().toLocaleTimeString()}; refreshed every 10 s while this page is open.`;
}

$('nodes-refresh').addEventListener('click', () => showNodes());

// ---------------------------------------------------------------- account page

async function showAccount() {
  const dl = $('account-facts');
  dl.replaceChildren();
  let a;
  try {
    a = await api('GET', 'account');
  } catch (e) {
    if (e.status === 404) {
      fact(dl, 'Account', 'This key has no credit account.');
      return;
    }
    showPageError(e);
    return;
  }
  fact(dl, 'Account', a.account);
  fact(dl, 'Balance', credits(a.balance));
  fact(dl, 'Reserved for running tasks', credits(a.reserved));
  fact(dl, 'Spent', credits(a.spent));
  fact(dl, 'Earned', credits(a.earned));
  if (a.nodes?.length) fact(dl, 'Nodes operated', a.nodes.join(', '));
  const l = a.limits || {};
  const limits = Object.entries(l).filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k.replace(/_/g, ' ')}: ${k === 'spending_cap' ? credits(v) : v}`);
  fact(dl, 'Limits', limits.length ? limits.join('; ') : 'none');
}

// ---------------------------------------------------------------- routing

const current = { page: null, arg: null };

function showPageError(e) {
  const box = $('page-error');
  box.textContent = describe(e).join(' ');
  show(box, true);
}

/** Shows the page the hash names; `focus`: move focus to its heading (not on the first load). */
function route(focus = true) {
  const hash = location.hash;
  if (hash && !hash.startsWith('#/')) return; // the skip link
  let [page, arg] = hash.slice(2).split('/');
  if (!key) page = 'signin';
  else if (!page || page === 'signin') page = 'tasks';
  if (!['signin', 'submit', 'tasks', 'task', 'nodes', 'account'].includes(page)) page = 'tasks';
  current.page = page;
  current.arg = arg ? decodeURIComponent(arg) : null;
  show($('page-error'), false);
  for (const s of document.querySelectorAll('main > section.page')) show(s, s.id === `page-${page}`);
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.page === page || (page === 'task' && a.dataset.page === 'tasks')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  clearInterval(nodesTimer);
  nodesTimer = null;
  const heading = document.querySelector(`#page-${page} h1`);
  document.title = `${heading.textContent.trim()} · Ambient VCP console`;
  if (page === 'signin') $('api-key').focus();
  else if (focus) heading.focus();
  if (page === 'submit') openSubmit();
  else if (page === 'task') {
    proofShown = null;
    show($('task-proof'), false);
    showTask(current.arg, focus);
  } else if (page === 'nodes') {
    showNodes();
    nodesTimer = setInterval(showNodes, 10000);
  } else if (page === 'account') showAccount();
}

document.querySelector('.skip').addEventListener('click', (ev) => {
  ev.preventDefault();
  $('main').focus();
});

window.addEventListener('hashchange', () => route());

async function start() {
  if (key) {
    try {
      signedIn(await signIn(key));
    } catch (e) {
      if (e.status === 401) {
        key = null;
        sessionStorage.removeItem(KEY);
        $('signin-error').textContent = `The coordinator refused the saved key: ${e.message}.`;
        show($('signin-error'), true);
      } else {
        signedIn('');
        showPageError(e);
      }
    }
  }
  route(false);
  document.body.dataset.ready = 'yes';
}

start();
