// Drives the dashboard (tray-app/ui) in headless Chromium against a REAL running agent.
//
//   node dashboard.mjs --control <agent data_dir>/control.json [--out DIR]
//
// A small static server serves ui/ and forwards /v1/* to the agent's control API (so the page is
// same-origin, as it is in the tray app), and the page gets the token in its URL hash. Every check
// reads the agent's state back with its own authorized request, not from the page. Screenshots go
// to --out (default target/test-output/tray). Exit code 0 only when every check passed.
import { readFileSync, mkdirSync, existsSync } from 'node:fs';
import { createServer } from 'node:http';
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
const controlPath = opt('--control', process.env.AMBIENT_AGENT_CONTROL);
const out = resolve(opt('--out', resolve(here, '..', '..', 'target', 'test-output', 'tray')));
const chromiumPath = process.env.CHROMIUM || ['/usr/bin/chromium', '/usr/bin/chromium-browser',
  '/usr/bin/google-chrome'].find(existsSync);
if (!controlPath) fail('give the agent control file: --control PATH or AMBIENT_AGENT_CONTROL');
if (!chromiumPath) fail('no Chromium found (apt install chromium, or set CHROMIUM)');
mkdirSync(out, { recursive: true });
const control = JSON.parse(readFileSync(controlPath, 'utf8'));

function fail(msg) {
  console.error(`dashboard test FAILED: ${msg}`);
  process.exit(1);
}

// ---------- the agent, read directly ----------

async function direct(method, path, body) {
  const r = await fetch(control.url.replace(/\/$/, '') + path, {
    method,
    headers: { Authorization: `Bearer ${control.token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

async function until(what, f, ms = 10000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await f();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  fail(`timed out waiting for ${what}`);
}

// ---------- static server + /v1 proxy ----------

const { base, server } = await serveUi(() => control.url);

// ---------- the browser ----------

const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox'] });
const page = await browser.newPage({ viewport: { width: 1000, height: 1100 } });
const consoleErrors = [];
page.on('pageerror', (e) => consoleErrors.push(String(e)));
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
const shot = async (name) => { await page.screenshot({ path: join(out, `${name}.png`), fullPage: true }); };
let passed = 0;
const check = (name, ok, detail = '') => {
  if (!ok) fail(`${name} ${detail}`);
  passed++;
  console.log(`ok - ${name}`);
};

try {
  await page.goto(`${base}/index.html#token=${control.token}`);
  await page.waitForSelector('body[data-agent=up]', { timeout: 10000 });
  const s0 = (await direct('GET', '/v1/status')).body;
  check('status shows the node id', (await page.textContent('#node-id')) === s0.node_id, `(${s0.node_id})`);
  check('tasks done shown', (await page.textContent('#tasks-done')) === String(s0.tasks_done));
  await shot('01-status');

  // --- toggle: the agent's master switch flips, both ways ---
  const before = s0.settings.enabled;
  await page.click('#toggle');
  await until('the agent to take the toggle', async () =>
    (await direct('GET', '/v1/status')).body.settings.enabled === !before);
  await page.waitForSelector(`#toggle[data-enabled=${!before}]`);
  const label = await page.textContent('#toggle');
  check('toggle changed the agent', true);
  check('button offers the opposite action',
    label === (before ? 'Resume contributing' : 'Pause contributing'), `(${label})`);
  if (before) {
    const s = (await direct('GET', '/v1/status')).body;
    check('paused agent says it does not contribute', s.contributing === false);
    await page.waitForSelector('#state-badge[data-look=paused], #state-badge[data-look=disconnected]');
  }
  await shot('02-toggled');
  await page.click('#toggle');
  await until('the agent to take the second toggle', async () =>
    (await direct('GET', '/v1/status')).body.settings.enabled === before);
  check('toggle back restored the agent', true);

  // --- settings: change several, save, read back from the agent ---
  await page.waitForFunction(() => document.querySelector('[name=idle_minutes]').value !== '');
  await page.fill('[name=idle_minutes]', '17');
  await page.fill('[name=exclusive_apps]', 'tray-test-game\nblender');
  await page.fill('[name=cpu_max_cores]', '1');
  await page.$eval('[name=cpu_duty_pct]', (e) => { e.value = '60'; e.dispatchEvent(new Event('input', { bubbles: true })); });
  const gpuBefore = (await direct('GET', '/v1/settings')).body.gpu_enabled;
  await page.setChecked('[name=gpu_enabled]', !gpuBefore);
  await page.click('#add-window');
  // A second window: Saturdays, the whole day (00:00 to 00:00 in the form, 24:00 to the agent).
  await page.click('#add-window');
  const second = page.locator('#windows .window-row').nth(1);
  for (const d of ['mon', 'tue', 'wed', 'thu', 'fri', 'sun']) await second.locator(`input[value=${d}]`).uncheck();
  await second.locator('[name=start]').fill('00:00');
  await second.locator('[name=end]').fill('00:00');
  await page.click('#save');
  await page.waitForSelector('#settings-saved:not([hidden])', { timeout: 5000 });
  const set = (await direct('GET', '/v1/settings')).body;
  check('idle_minutes persisted', set.idle_minutes === 17, JSON.stringify(set));
  check('exclusive_apps persisted', JSON.stringify(set.exclusive_apps) === '["tray-test-game","blender"]', JSON.stringify(set));
  check('cpu_max_cores persisted', set.cpu_max_cores === 1, JSON.stringify(set));
  check('cpu_duty_pct persisted', set.cpu_duty_pct === 60, JSON.stringify(set));
  check('gpu_enabled persisted', set.gpu_enabled === !gpuBefore, JSON.stringify(set));
  check('time windows persisted', set.time_windows.length === 2 && set.time_windows[0].start === '22:00'
    && set.time_windows[0].end === '07:00' && set.time_windows[0].days.length === 7, JSON.stringify(set));
  check('whole-day window saved as 00:00-24:00', JSON.stringify(set.time_windows[1])
    === '{"days":["sat"],"start":"00:00","end":"24:00"}', JSON.stringify(set.time_windows[1]));
  check('form shows the saved whole-day window', await second.locator('[name=end]').inputValue() === '00:00');
  await shot('03-settings-saved');

  // --- a bad setting: the agent's error shows next to the form, and nothing changes ---
  await page.fill('[name=idle_minutes]', '0');
  await page.click('#save');
  await page.waitForSelector('#settings-error:not([hidden])', { timeout: 5000 });
  const err = await page.textContent('#settings-error');
  check('bad setting shows the agent error', /idle_minutes/.test(err), `(${err})`);
  check('bad field is marked', await page.$eval('[name=idle_minutes]', (e) => e.classList.contains('bad-field')));
  check('bad setting did not persist', (await direct('GET', '/v1/settings')).body.idle_minutes === 17);
  await shot('04-settings-error');

  // put the settings back as they were, so later tests see a default agent
  const restore = { ...set, idle_minutes: 5, exclusive_apps: [], cpu_max_cores: null, cpu_duty_pct: 100, gpu_enabled: gpuBefore, time_windows: [] };
  check('settings restored', (await direct('PUT', '/v1/settings', restore)).status === 200);

  // --- the reputation chart: one point per history event the agent reports ---
  const rep = await direct('GET', '/v1/reputation');
  check('agent has a reputation to chart', rep.status === 200 && rep.body.history.length > 0,
    `(status ${rep.status}: ${JSON.stringify(rep.body)})`);
  await page.reload();
  await page.waitForSelector('#rep-chart circle.pt', { timeout: 15000 });
  const points = await page.$$eval('#rep-chart circle.pt', (c) => c.length);
  check('chart has one point per history event', points === rep.body.history.length,
    `(${points} points, ${rep.body.history.length} events)`);
  check('chart draws the line', (await page.$$('#rep-chart polyline.line')).length === 1);
  const summary = await page.textContent('#rep-summary');
  check('reputation summary shows the score',
    summary.includes(`Score ${rep.body.reputation.score.toFixed(1)}`), `(${summary})`);
  const earned = await page.textContent('#credits-summary');
  check('credits earned are shown beside the reputation',
    rep.body.credits && rep.body.credits.total > 0 && earned.startsWith('Credits earned: ')
      && !earned.includes('NaN'),
    `(${earned}; report ${JSON.stringify(rep.body.credits)})`);
  await page.locator('#reputation-card').screenshot({ path: join(out, '05-reputation-chart.png') });
  await shot('05-dashboard');

  // --- no agent: an address where nothing listens says so plainly, with how to start one ---
  const dead = createServer();
  await new Promise((r) => dead.listen(0, '127.0.0.1', r));
  const deadPort = dead.address().port;
  await new Promise((r) => dead.close(r));
  const page2 = await browser.newPage({ viewport: { width: 1000, height: 700 } });
  await page2.goto(`${base}/index.html#url=http://127.0.0.1:${deadPort}&token=x`);
  await page2.waitForSelector('#no-agent:not([hidden])', { timeout: 10000 });
  const help = await page2.textContent('#no-agent');
  check('no agent: says so with how to start one', help.includes('No agent is running') && help.includes('ambient-agent run'));
  check('no agent: toggle disabled', await page2.$eval('#toggle', (b) => b.disabled));
  await page2.screenshot({ path: join(out, '06-no-agent.png'), fullPage: true });

  // --- wrong token: the agent refuses, and the page does not pretend ---
  const page3 = await browser.newPage();
  await page3.goto(`${base}/index.html#token=wrong`);
  await page3.waitForFunction(() => /Error/.test(document.querySelector('#state-badge').textContent), null, { timeout: 10000 });
  check('wrong token is refused', true);

  const realErrors = consoleErrors.filter((e) => !/Failed to load resource|ERR_CONNECTION_REFUSED|401|404/.test(e));
  check('no script errors in the page', realErrors.length === 0, JSON.stringify(realErrors));
  console.log(`dashboard: ${passed} checks passed; screenshots in ${out}`);
} catch (e) {
  await shot('failure').catch(() => {});
  fail(e.stack || String(e));
} finally {
  await browser.close();
  server.close();
}
