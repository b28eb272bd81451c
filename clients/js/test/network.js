// Starts a real local network (`ambient up`) on free loopback ports for the tests, and stops it.
// The binary is $AMBIENT_BIN, else ${CARGO_TARGET_DIR:-<repo>/target}/debug/ambient.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client, loadConnection } from '../index.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const TESTDATA = path.join(REPO, 'clients', 'testdata');
/** Agents the test network runs. */
export const AGENTS = 3;
/** Milliseconds a test waits for a task that should end quickly; generous for 2 busy cores. */
export const WAIT = 120_000;

export function ambientBin() {
  if (process.env.AMBIENT_BIN) return process.env.AMBIENT_BIN;
  const target = path.resolve(REPO, process.env.CARGO_TARGET_DIR || 'target');
  return path.join(target, 'debug', 'ambient');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** What sum.wasm prints for `inputs`: the sum of the digit runs of their JSON. */
export function expectedSum(inputs) {
  return (JSON.stringify(inputs).match(/[0-9]+/g) ?? []).reduce((a, d) => a + Number(d), 0);
}

/**
 * Starts `ambient up` (with `extraArgs`) in a fresh directory; resolves once connection.json is
 * written and every agent is online. Returns {connectionPath, connection, binary, stop()}.
 */
export async function startNetwork(extraArgs = []) {
  const binary = ambientBin();
  if (!existsSync(binary)) {
    throw new Error(`no ambient binary at ${binary}: build it with \`cargo build -p ambient-cli\` or set AMBIENT_BIN`);
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'ambient-js-'));
  const dataDir = path.join(dir, 'data');
  const logPath = path.join(dir, 'ambient-up.log');
  const log = openSync(logPath, 'w');
  const child = spawn(binary, ['up', '--data-dir', dataDir, '--agents', String(AGENTS),
    '--http-addr', '127.0.0.1:0', '--mqtt-addr', '127.0.0.1:0', ...extraArgs], {
    stdio: ['ignore', log, log],
    env: { ...process.env, RUST_LOG: 'warn,rumqttd=off', NO_COLOR: '1' },
  });
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });
  const tail = () => readFileSync(logPath, 'utf8').split('\n').slice(-30).join('\n');
  const stop = async () => {
    if (exited === null) {
      child.kill('SIGINT');
      const done = new Promise((r) => child.once('exit', r));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await done;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const connectionPath = path.join(dataDir, 'connection.json');
    const deadline = Date.now() + 90_000;
    let connection = null;
    while (connection === null) {
      if (exited) throw new Error(`\`ambient up\` exited (${JSON.stringify(exited)}):\n${tail()}`);
      if (Date.now() > deadline) throw new Error(`\`ambient up\` wrote no connection.json in 90 s:\n${tail()}`);
      // The file appears before its content is written: read until it parses.
      if (readFileSync(logPath, 'utf8').includes('is up')) {
        connection = await loadConnection(connectionPath).catch(() => null);
      }
      if (connection === null) await sleep(100);
    }
    const client = new Client({ apiUrl: connection.api_url, apiKey: connection.api_key });
    await client.waitForNodes(AGENTS, { timeoutMs: 60_000 });
    return { connectionPath, connection, binary, stop, dir };
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * Joins `csvs.length` more agents to the network, agent i holding `csvs[i]` as the data set
 * `name`, the way an operator would: `ambient-agent join` with the join token `ambient up`
 * wrote to connection.json, then the data set in the configuration it wrote. (`ambient up`
 * gives its own agents no data sets.) Resolves with {nodeIds, stop()} once they are online
 * with it, or with null when this `ambient up` writes no join token.
 */
export async function joinDataNodes(net, client, name, csvs) {
  const token = net.connection.join_token;
  if (!token) return null;
  const binary = process.env.AMBIENT_AGENT_BIN || path.join(path.dirname(net.binary), 'ambient-agent');
  if (!existsSync(binary)) throw new Error(`no agent binary at ${binary}: build it or set AMBIENT_AGENT_BIN`);
  const env = { ...process.env, RUST_LOG: 'warn', NO_COLOR: '1', AMBIENT_CONTROL_LISTEN: '127.0.0.1:0' };
  const children = [];
  const nodeIds = [];
  const stop = async () => {
    await Promise.all(children.map((c) => new Promise((resolve) => {
      if (c.exitCode !== null || c.signalCode !== null) return resolve();
      const timer = setTimeout(() => c.kill('SIGKILL'), 20_000);
      c.once('exit', () => { clearTimeout(timer); resolve(); });
      c.kill('SIGINT');
    })));
  };
  try {
    for (const [i, csv] of csvs.entries()) {
      const data = path.join(net.dir, `part${i}.csv`);
      writeFileSync(data, csv);
      const config = path.join(net.dir, `agent${i}.toml`);
      const out = execFileSync(binary, ['join', token, '--config', config, '--data-dir',
        path.join(net.dir, `agent${i}`), '--name', `fl-js-${i}`, '--json'], { env, encoding: 'utf8' });
      nodeIds.push(JSON.parse(out.trim().split('\n').at(-1)).node_id);
      const text = readFileSync(config, 'utf8');
      const entry = `datasets = [{ name = "${name}", path = ${JSON.stringify(data)}, label = "target" }]`;
      if (!/^datasets = \[\]$/m.test(text)) throw new Error(`no \`datasets = []\` line in the configuration join wrote:\n${text}`);
      writeFileSync(config, text.replace(/^datasets = \[\]$/m, entry));
      const log = openSync(path.join(net.dir, `agent${i}.log`), 'w');
      children.push(spawn(binary, ['run', '--config', config], { stdio: ['ignore', log, log], env }));
    }
    const deadline = Date.now() + 60_000;
    for (;;) {
      const held = new Set((await client.nodes())
        .filter((n) => n.state === 'online' && (n.health?.datasets ?? []).some((d) => d.name === name))
        .map((n) => n.node_id));
      if (nodeIds.every((id) => held.has(id))) break;
      if (Date.now() > deadline || children.some((c) => c.exitCode !== null)) {
        throw new Error(`the joined agents did not come online with ${name}`);
      }
      await sleep(300);
    }
    return { nodeIds, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** CSV with a header: two features and a 0/1 label a logistic model separates well. */
export function separableCsv(n, seed) {
  let state = seed >>> 0;
  const rand = () => {
    // mulberry32: a small seeded generator, so every run trains on the same data.
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const lines = ['f0,f1,target'];
  for (let i = 0; i < n; i++) {
    const a = rand() * 4 - 2;
    const b = rand() * 4 - 2;
    const noise = (rand() + rand() + rand() - 1.5) * 0.4;
    lines.push(`${a.toFixed(4)},${b.toFixed(4)},${a + 0.5 * b + noise > 0 ? 1 : 0}`);
  }
  return `${lines.join('\n')}\n`;
}
