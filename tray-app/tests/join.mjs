// Joins a network from the dashboard (tray-app/ui) in headless Chromium, as a home user would:
// the agent, started as the package's user service starts it (`run --wait-for-join`), has not
// joined yet; the page shows "Join a network"; a bad paste gets an error; the real token is
// pasted and Join clicked; the agent enrols, starts, and the page shows "Contributing".
//
//   node join.mjs --control <agent data_dir>/control.json --token TOKEN [--out DIR]
//
// As in dashboard.mjs, a small static server serves ui/ and forwards /v1/* to the agent's control
// API, and every check reads the agent back with its own authorized request. Screenshots go to
// --out (default target/test-output/tray). Exit code 0 only when every check passed.
import { readFileSync, mkdirSync, existsSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serveUi } from './serve.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const controlPath = opt('--control');
const token = opt('--token');
const out = resolve(opt('--out', resolve(here, '..', '..', 'target', 'test-output', 'tray')));
const chromiumPath = process.env.CHROMIUM || ['/usr/bin/chromium', '/usr/bin/chromium-browser',
  '/usr/bin/google-chrome'].find(existsSync);
if (!controlPath || !token) fail('give --control PATH and --token TOKEN');
if (!chromiumPath) fail('no Chromium found (apt install chromium, or set CHROMIUM)');
mkdirSync(out, { recursive: true });
// Read again on every call, as the tray app does: the agent may move to another port when it
// starts for real after the join (its configured one taken).
const control = () => JSON.parse(readFileSync(controlPath, 'utf8'));

function fail(msg) {
  console.error(`join test FAILED: ${msg}`);
  process.exit(1);
}

async function direct(method, path) {
  try {
    const c = control();
    const r = await fetch(c.url.replace(/\/$/, '') + path, {
      method, headers: { Authorization: `Bearer ${c.token}` },
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  } catch {
    return { status: 0, body: null }; // the agent is between its setup API and its own
  }
}

async function until(what, f, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await f()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  fail(`timed out waiting for ${what}`);
}

const { base, server } = await serveUi(() => control().url);

const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox'] });
const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(String(e)));
const shot = async (name) => { await page.screenshot({ path: join(out, `${name}.png`), fullPage: true }); };
let passed = 0;
const check = (name, ok, detail = '') => {
  if (!ok) fail(`${name} ${detail}`);
  passed++;
  console.log(`ok - ${name}`);
};

try {
  const before = await direct('GET', '/v1/status');
  check('the agent has not joined yet', before.status === 409 && before.body.error === 'not_joined',
    JSON.stringify(before));
  await page.goto(`${base}/index.html#token=${control().token}`);
  await page.waitForSelector('body[data-agent=not-joined]', { timeout: 10000 });
  check('the page offers to join', await page.isVisible('#join'));
  check('the badge says not joined', (await page.textContent('#state-badge')) === 'Not joined');
  await shot('10-join-form');

  // A paste that is not a token: refused on the page, the agent untouched.
  await page.fill('#join-token', 'hello');
  await page.click('#join-button');
  await page.waitForSelector('#join-error:not([hidden])');
  check('a wrong paste is explained', (await page.textContent('#join-error')).includes('ambient-join-v1.'));
  // A damaged token: the agent's refusal is shown as it is.
  await page.fill('#join-token', `${token.slice(0, -6)}AAAAAA`);
  await page.click('#join-button');
  await page.waitForFunction(() => /damaged/.test(document.querySelector('#join-error').textContent));
  check('a damaged token gets the agent\'s error', (await page.textContent('#join-error')).includes('invalid_token'));
  await shot('11-join-refused');
  check('still not joined', (await direct('GET', '/v1/status')).status === 409);

  // The real token.
  await page.fill('#join-token', token);
  await page.click('#join-button');
  await until('the agent to join and contribute', async () => {
    const s = await direct('GET', '/v1/status');
    return s.status === 200 && s.body.connected && s.body.contributing;
  }, 60000);
  const s = (await direct('GET', '/v1/status')).body;
  check('the agent joined and contributes', s.node_id.startsWith('node-'), `(${s.node_id})`);
  await page.waitForSelector('#state-badge[data-look=contributing]', { timeout: 15000 });
  check('the page shows the node', (await page.textContent('#node-id')) === s.node_id);
  check('the join form is gone', !(await page.isVisible('#join')));
  await shot('12-joined-contributing');
  check('no page errors', pageErrors.length === 0, JSON.stringify(pageErrors));
  console.log(`join: ${passed} checks passed; node ${s.node_id}; screenshots in ${out}`);
  console.log(`NODE_ID=${s.node_id}`);
} finally {
  await browser.close();
  server.close();
}
