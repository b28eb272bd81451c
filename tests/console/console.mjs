// Drives the coordinator's web console (/console/) in headless Chromium against a REAL network.
//
//   node console.mjs --url API_URL --key API_KEY --wasm SUM_MODULE [--out DIR]
//
// Started by tests/tests/console.rs, which starts the network (coordinator, broker, two agents).
// The console is served by the coordinator itself, so the page is same-origin with the API.
// Every outcome the page shows is read back with a direct API request. Screenshots go to --out
// (default target/test-output/console). Exit code 0 only when every check passed.
//
// playwright-core is the tray app's test dependency (tray-app/tests/node_modules, `npm ci`
// there): one installation serves both browser tests.
import { mkdirSync, mkdtempSync, existsSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const require = createRequire(join(repo, 'tray-app', 'tests', 'package.json'));
const { chromium } = require('playwright-core');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const base = (opt('--url') || '').replace(/\/$/, '');
const apiKey = opt('--key');
const wasmPath = opt('--wasm');
const out = resolve(opt('--out', join(repo, 'target', 'test-output', 'console')));
const chromiumPath = process.env.CHROMIUM || ['/usr/bin/chromium', '/usr/bin/chromium-browser',
  '/usr/bin/google-chrome'].find(existsSync);
if (!base || !apiKey || !wasmPath) fail('give --url, --key and --wasm');
if (!chromiumPath) fail('no Chromium found (apt install chromium, or set CHROMIUM)');
mkdirSync(out, { recursive: true });

function fail(msg) {
  console.error(`console test FAILED: ${msg}`);
  process.exit(1);
}

/** The API, read directly with the key (not through the page). */
async function direct(method, path, body) {
  const r = await fetch(`${base}/api/v1/${path}`, {
    method,
    headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox'] });
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const errors = [];
page.on('pageerror', (e) => errors.push(String(e)));
// Chromium logs each 4xx answer as a failed load; the page shows those (a refused key, a refused
// submission). Any other console error is a bug.
page.on('console', (m) => {
  if (m.type() === 'error' && !/Failed to load resource: .* status of 4\d\d/.test(m.text())) errors.push(m.text());
});
const requests = [];
page.on('request', (r) => requests.push({ method: r.method(), path: new URL(r.url()).pathname }));
const shot = async (name) => { await page.screenshot({ path: join(out, `${name}.png`), fullPage: true }); };
let passed = 0;
const check = (name, ok, detail = '') => {
  if (!ok) fail(`${name} ${detail}`);
  passed++;
  console.log(`ok - ${name}`);
};

/** The JSON the submit page shows. */
const shownBody = async () => JSON.parse(await page.inputValue('#body'));

/** Waits until the shown JSON satisfies `f`. */
async function untilBody(what, f) {
  const end = Date.now() + 10000;
  let last;
  while (Date.now() < end) {
    try {
      last = await shownBody();
      if (f(last)) return last;
    } catch { /* not JSON yet */ }
    await page.waitForTimeout(100);
  }
  fail(`the shown JSON never ${what}: ${JSON.stringify(last)}`);
}

/** Picks a source on the submit page, submits what it shows, and returns the new task's id. */
async function submitShown() {
  await page.click('#send');
  const link = await page.waitForSelector('#sent-link', { timeout: 15000 });
  return (await link.getAttribute('href')).replace('#/task/', '');
}

/** Waits on the tasks page until task `id` shows `completed`; returns the statuses it showed. */
async function watchCompleted(id, ms = 120000) {
  await page.click('#nav a[data-page=tasks]');
  await page.waitForSelector(`#tasks-body tr[data-task="${id}"]`, { timeout: 10000 });
  const seen = await page.evaluate(async ({ id, ms }) => {
    const statuses = [];
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const row = document.querySelector(`#tasks-body tr[data-task="${id}"]`);
      const s = row && row.dataset.status;
      if (s && statuses[statuses.length - 1] !== s) statuses.push(s);
      if (s === 'completed' || s === 'failed' || s === 'expired') return statuses;
      await new Promise((r) => setTimeout(r, 50));
    }
    return statuses;
  }, { id, ms });
  return seen;
}

/** `value` as the page shows it: strings over 4096 characters replaced by numbered markers. */
function shortened(value) {
  let n = 0;
  const walk = (v) => {
    if (typeof v === 'string' && v.length > 4096) return `«long string #${++n}: ${v.length} characters, sent whole»`;
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(value);
}

/** Every visible form control has a label. */
async function unlabelled() {
  return page.$$eval('main input, main textarea, main select', (els) => els
    .filter((e) => e.offsetParent !== null && e.type !== 'hidden')
    .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
    .map((e) => e.id || e.name || e.outerHTML.slice(0, 60)));
}

try {
  // --- the page, and a wrong key ---
  await page.goto(`${base}/console`);
  check('/console redirects to /console/', new URL(page.url()).pathname === '/console/', page.url());
  await page.waitForSelector('body[data-ready=yes]');
  await page.waitForSelector('#page-signin:not([hidden])');
  check('sign-in form is labelled', (await unlabelled()).length === 0, JSON.stringify(await unlabelled()));
  await page.fill('#api-key', 'not-the-key');
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#signin-error:not([hidden])');
  const wrong = await page.textContent('#signin-error');
  check('a wrong key gets a clear message', /not accepted/.test(wrong) && /invalid API key/.test(wrong), `(${wrong})`);
  check('the key field is marked invalid', (await page.getAttribute('#api-key', 'aria-invalid')) === 'true');
  check('still signed out', await page.isHidden('#nav'));
  await shot('01-wrong-key');

  // --- sign in: the stream opens ---
  await page.fill('#api-key', apiKey);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#nav:not([hidden])');
  await page.waitForSelector('#live[data-state=live]', { timeout: 10000 });
  check('signed in, the event stream is live', true);
  check('the key is kept in sessionStorage only', await page.evaluate((k) =>
    sessionStorage.getItem('ambient.console.key') === k && localStorage.length === 0, apiKey));
  check('the account shows in the header', /Signed in as local/.test(await page.textContent('#account-name')));

  // --- submit from the pi template ---
  await page.click('#nav a[data-page=submit]');
  await page.waitForSelector('#source-list input[type=radio]');
  const templates = (await direct('GET', 'templates')).body.map((t) => t.name);
  const offered = await page.$$eval('#source-list input[type=radio]', (rs) => rs.map((r) => r.value));
  check('every template is offered, and a wasm upload', JSON.stringify(offered) === JSON.stringify([...templates, '']),
    JSON.stringify(offered));
  await page.check('#src-pi');
  await page.waitForSelector('#param-samples');
  check('the template form is labelled', (await unlabelled()).length === 0, JSON.stringify(await unlabelled()));
  await page.fill('#param-samples', '1000000');
  await page.fill('#param-shards', '4');
  const piBody = await untilBody('showed 10⁶ samples in 4 shards', (b) =>
    b.inputs?.range?.end === 1000000 && b.inputs?.range?.shards === 4);
  const rendered = (await direct('POST', 'templates/pi/render', { set: { samples: 1000000, shards: 4 } })).body.submission;
  check('the JSON shown is the template rendered by the coordinator (long strings shortened)',
    JSON.stringify(piBody) === JSON.stringify(shortened(rendered)), JSON.stringify(piBody).slice(0, 300));
  check('the shown JSON is a computation', piBody.task_type === 'computation' && piBody.inputs.reduce === 'sum');
  await shot('02-submit-pi');

  // A bad parameter is marked, and nothing is sent.
  await page.fill('#param-shards', 'many');
  await page.waitForSelector('#param-shards[aria-invalid=true]');
  check('a parameter that is not a number is marked', true);
  await page.fill('#param-shards', '4');
  await page.waitForSelector('#param-shards:not([aria-invalid])');

  const mark = requests.length;
  const piId = await submitShown();
  check('submitted the pi job', /^[0-9a-f-]{36}$/.test(piId), piId);
  const piStatuses = await watchCompleted(piId);
  console.log(`   pi statuses on the page: ${piStatuses.join(' → ')}`);
  check('the live list reached completed', piStatuses[piStatuses.length - 1] === 'completed', piStatuses.join(','));
  const after = requests.slice(mark);
  const listReads = after.filter((r) => r.method === 'GET' && r.path.startsWith('/api/v1/tasks'));
  const streams = after.filter((r) => r.path === '/api/v1/events');
  check('the page did not poll the task list', listReads.length === 0, JSON.stringify(listReads));
  check('no new event stream was opened meanwhile', streams.length === 0, JSON.stringify(streams));
  check('the API agrees the task completed', (await direct('GET', `tasks/${piId}`)).body.status === 'completed');
  await shot('03-tasks-live');

  // --- the task page: output, cost ---
  await page.click(`#tasks-body tr[data-task="${piId}"] a`);
  await page.waitForSelector('#page-task:not([hidden])');
  await page.waitForFunction(() => /hits/.test(document.getElementById('task-output').textContent));
  const piOut = JSON.parse(await page.textContent('#task-output'));
  const piApi = (await direct('GET', `tasks/${piId}`)).body;
  check('the output shown is the task result', JSON.stringify(piOut) === JSON.stringify(piApi.result.output), JSON.stringify(piOut));
  const estimate = (4 * piOut.hits) / piOut.samples;
  check('4·hits/samples is near π', piOut.samples === 1000000 && Math.abs(estimate - Math.PI) < 0.01, String(estimate));
  const facts = await page.textContent('#task-facts');
  check('the cost is shown', /Cost \(credits\)/.test(facts) && /charged/.test(facts), facts);
  check('the inputs sent are shown', /"kernel_base64"/.test(await page.textContent('#task-inputs')));
  await shot('04-task-pi');

  // --- zk: submit the hash chain, verify its proof from the task page ---
  await page.click('#nav a[data-page=submit]');
  await page.check('#src-zk-hash-chain');
  await untilBody('showed the hash chain', (b) => b.task_type === 'zk_proof' && b.inputs?.circuit === 'hash_chain');
  const zkId = await submitShown();
  const zkStatuses = await watchCompleted(zkId);
  check('the zk task completed', zkStatuses[zkStatuses.length - 1] === 'completed', zkStatuses.join(','));
  await page.click(`#tasks-body tr[data-task="${zkId}"] a`);
  await page.waitForSelector('#task-proof:not([hidden])', { timeout: 10000 });
  await page.click('#verify');
  await page.waitForSelector('#verify-answer[data-valid]', { timeout: 30000 });
  const verdict = await page.getAttribute('#verify-answer', 'data-valid');
  check('Verify says the proof is valid', verdict === 'true', await page.textContent('#verify-answer'));
  const zkApi = (await direct('GET', `tasks/${zkId}`)).body;
  const proofShown = await page.textContent('#proof-facts');
  check('the proof shown is the task\'s', zkApi.proof_id && proofShown.includes(zkApi.proof_id), proofShown.slice(0, 200));
  await shot('05-zk-verified');

  // --- a proved inference (submitted through the API), its proof verified from the task page ---
  const fixture = join(repo, 'tests', 'fixtures', 'zk');
  const model = readFileSync(join(fixture, 'mlp_tanh_softmax.onnx'));
  const reference = JSON.parse(readFileSync(join(fixture, 'mlp_tanh_softmax.json'), 'utf8'));
  const proved = await direct('POST', 'tasks', {
    task_type: 'inference',
    inputs: { model_base64: model.toString('base64'), tensors: reference.inputs },
    requirements: { require_proof: true },
  });
  check('the proved inference is accepted', proved.status === 201, JSON.stringify(proved.body));
  const provedStatuses = await watchCompleted(proved.body.task_id);
  check('the proved inference completed', provedStatuses[provedStatuses.length - 1] === 'completed', provedStatuses.join(','));
  await page.click(`#tasks-body tr[data-task="${proved.body.task_id}"] a`);
  await page.waitForSelector('#task-proof:not([hidden])', { timeout: 10000 });
  const modelFacts = await page.textContent('#proof-facts');
  const provedApi = (await direct('GET', `tasks/${proved.body.task_id}`)).body;
  const proofDoc = (await direct('GET', `proofs/${provedApi.proof_id}`)).body;
  check('the proof names its model', modelFacts.includes(proofDoc.model_sha256) && /constraints/.test(modelFacts), modelFacts.slice(0, 300));
  await page.click('#verify');
  await page.waitForSelector('#verify-answer[data-valid]', { timeout: 30000 });
  check('Verify says the model\'s proof is valid', await page.getAttribute('#verify-answer', 'data-valid') === 'true',
    await page.textContent('#verify-answer'));
  await shot('05b-proved-inference-verified');

  // --- a wasm module from a file ---
  await page.click('#nav a[data-page=submit]');
  await page.check('#src-wasm');
  await page.setInputFiles('#wasm-file', wasmPath);
  await page.fill('#wasm-inputs', '{"numbers": [19, 23]}');
  const moduleB64 = readFileSync(wasmPath).toString('base64');
  await untilBody('carried the module', (b) => b.wasm_module === moduleB64 && b.inputs?.numbers?.length === 2);
  check('the uploaded module is in the JSON, base64', true);
  await shot('06-submit-wasm');
  const wasmId = await submitShown();
  const wasmStatuses = await watchCompleted(wasmId);
  check('the wasm task completed', wasmStatuses[wasmStatuses.length - 1] === 'completed', wasmStatuses.join(','));
  await page.click(`#tasks-body tr[data-task="${wasmId}"] a`);
  await page.waitForFunction(() => /sum/.test(document.getElementById('task-output').textContent));
  check('the module summed the inputs', JSON.parse(await page.textContent('#task-output')).sum === 42);

  // --- the photo filter: the output image is drawn ---
  await page.click('#nav a[data-page=submit]');
  await page.check('#src-photo-filter');
  await page.waitForSelector('#param-filter');
  check('a long default (the sample image) is offered as a file input',
    (await page.getAttribute('#param-image', 'type')) === 'file');
  await untilBody('showed the edge filter', (b) => b.task_type === 'wasm_execution' && b.inputs?.filter === 'edge');
  const photoId = await submitShown();
  const photoStatuses = await watchCompleted(photoId);
  check('the photo filter completed', photoStatuses[photoStatuses.length - 1] === 'completed', photoStatuses.join(','));
  await page.click(`#tasks-body tr[data-task="${photoId}"] a`);
  await page.waitForSelector('#task-image:not([hidden]) canvas', { timeout: 10000 });
  const photoApi = (await direct('GET', `tasks/${photoId}`)).body.result.output;
  const canvas = await page.$eval('#task-image canvas', (c) => ({ w: c.width, h: c.height, label: c.getAttribute('aria-label') }));
  check('the filtered image is drawn at its size', canvas.w === photoApi.width && canvas.h === photoApi.height && /image/.test(canvas.label),
    JSON.stringify(canvas));
  await shot('07-photo-filter');

  // A file replaces the default image (a 16×12 grey ramp, binary PGM).
  await page.click('#nav a[data-page=submit]');
  const ramp = Buffer.concat([Buffer.from('P5\n16 12\n255\n'), Buffer.from(Array.from({ length: 16 * 12 }, (_, i) => (i % 16) * 16))]);
  const rampDir = mkdtempSync(join(tmpdir(), 'console-test-'));
  const rampPath = join(rampDir, 'ramp.pgm');
  writeFileSync(rampPath, ramp);
  await page.setInputFiles('#param-image', rampPath);
  // Chromium reads the file when the page asks for it, so it stays until the page has it.
  await untilBody('carried the chosen image', (b) => b.inputs?.image === ramp.toString('base64'));
  rmSync(rampDir, { recursive: true });
  check('a chosen file is sent as the parameter, base64', true);

  // --- bad JSON is refused before sending; the API's refusal is shown ---
  await page.click('#nav a[data-page=submit]');
  await page.check('#src-wasm');
  await page.fill('#body', '{"task_type": "wasm_execution", ');
  await page.click('#send');
  await page.waitForSelector('#body-error:not([hidden])');
  check('JSON that does not parse is refused in the page', /not JSON/.test(await page.textContent('#body-error')));
  await page.fill('#body', '{"task_type": "wasm_execution", "inputs": {}}');
  await page.click('#send');
  await page.waitForFunction(() => /missing_module|invalid/.test(document.getElementById('body-error').textContent));
  check('the API\'s refusal is shown', true, await page.textContent('#body-error'));
  await shot('08-submit-refused');

  // --- nodes ---
  await page.click('#nav a[data-page=nodes]');
  await page.waitForSelector('#nodes-body tr');
  const nodesApi = (await direct('GET', 'nodes')).body;
  const rows = await page.$$eval('#nodes-body tr', (rs) => rs.map((r) => ({ node: r.dataset.node, state: r.dataset.state, text: r.textContent })));
  check('every node is listed', rows.length === nodesApi.length && nodesApi.every((n) => rows.some((r) => r.node === n.node_id)),
    JSON.stringify(rows.map((r) => r.node)));
  check('nodes show online with reputation', rows.every((r) => r.state === 'online' && /valid/.test(r.text)));
  await shot('09-nodes');

  // --- account ---
  await page.click('#nav a[data-page=account]');
  await page.waitForFunction(() => /Balance/.test(document.getElementById('account-facts').textContent));
  const acct = (await direct('GET', 'account')).body;
  const acctText = await page.textContent('#account-facts');
  const micro = BigInt(acct.balance);
  const shown = `${micro / 1000000n}.${String(micro % 1000000n).padStart(6, '0')}`;
  check('the balance shown is the account\'s', acctText.includes(shown), `${shown} in ${acctText}`);
  await shot('10-account');

  // --- keyboard: after a load, the skip link comes first and reaches the main content ---
  await page.click('#nav a[data-page=tasks]');
  await page.reload();
  await page.waitForSelector('body[data-ready=yes]');
  await page.waitForSelector('#page-tasks:not([hidden])');
  check('a reload keeps the session and the page', await page.isVisible('#nav'));
  await page.keyboard.press('Tab');
  check('the first Tab reaches the skip link', await page.evaluate(() => document.activeElement.classList.contains('skip')));
  await page.keyboard.press('Enter');
  check('the skip link moves focus to the content', await page.evaluate(() => document.activeElement.id === 'main'));
  await page.keyboard.press('Tab');
  const focusOutline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check('a focused control shows its focus', focusOutline !== 'none', focusOutline);

  // --- sign out ---
  await page.click('#sign-out');
  await page.waitForSelector('#page-signin:not([hidden])');
  check('signing out forgets the key', await page.evaluate(() => sessionStorage.getItem('ambient.console.key') === null));

  check('no script errors', errors.length === 0, JSON.stringify(errors));
  console.log(`console test passed: ${passed} checks; screenshots in ${out}`);
} catch (e) {
  await shot('99-failure').catch(() => {});
  fail(e.stack || String(e));
} finally {
  await browser.close();
}
