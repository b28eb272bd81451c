// The JavaScript client against one real `ambient up` (no mocks): every task kind, cancel,
// typed errors, and MQTT.

import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { WASI } from 'node:wasi';
import { randomUUID } from 'node:crypto';

import {
  AmbientError, ApiError, AuthenticationError, BadRequestError, Client, ConflictError,
  MqttClient, NotFoundError, TaskFailedError, TaskTimeoutError, TransportError,
  TaskInfo, UnprocessableError, bodies, tensor,
} from '../index.js';
import {
  REPO, TESTDATA, WAIT, expectedSum, joinDataNodes, separableCsv, startNetwork,
} from './network.js';

const SUM = readFileSync(path.join(TESTDATA, 'sum.wasm'));
const SPIN = readFileSync(path.join(TESTDATA, 'spin.wasm'));

let net;
let client;

before(async () => {
  net = await startNetwork();
  client = await Client.fromConnection(net.connectionPath);
});

after(async () => {
  await net?.stop();
});

/** Runs sum.wasm here, under node:wasi, with `stdin`: what every node must print. */
function runLocally(module, stdin) {
  const file = path.join(tmpdir(), `ambient-stdin-${randomUUID()}`);
  writeFileSync(file, stdin);
  const outFile = `${file}.out`;
  const fdIn = openSync(file, 'r');
  const fdOut = openSync(outFile, 'w');
  try {
    const wasi = new WASI({ version: 'preview1', stdin: fdIn, stdout: fdOut, returnOnExit: true });
    const instance = new WebAssembly.Instance(new WebAssembly.Module(module), wasi.getImportObject());
    wasi.start(instance);
  } finally {
    closeSync(fdIn);
    closeSync(fdOut);
  }
  const out = readFileSync(outFile, 'utf8');
  rmSync(file);
  rmSync(outFile);
  return out;
}

describe('wasm_execution', () => {
  test('runs replicated and returns what the module prints', async () => {
    const inputs = { numbers: [1, 22, 333, 4444], note: 'and 5' };
    const task = await client.submitWasm(SUM, inputs, { minNodes: 2, maxExecutionTimeSec: 20 });
    assert.equal(task.submitted.task_id, task.id);
    const info = await task.wait({ timeoutMs: WAIT });
    assert.equal(info.status, 'completed');
    assert.deepEqual(info.output, { sum: expectedSum(inputs) });
    assert.deepEqual(info.output, JSON.parse(runLocally(SUM, JSON.stringify(inputs))));
    // Two replicas agree, or, under adaptive replication, one trusted node answered alone.
    assert.ok(info.nodes.length >= 1 && info.nodes.length <= 2);
    assert.ok(info.created_at instanceof Date && info.updated_at >= info.created_at);
    assert.deepEqual(await task.result(), { sum: 4805 });
    assert.equal((await task.info()).status, 'completed');
  });

  test('a module from a file path', async () => {
    const info = await client.submitWasm(path.join(TESTDATA, 'sum.wasm'), { n: [7, 8] }).then((t) => t.wait({ timeoutMs: WAIT }));
    assert.deepEqual(info.output, { sum: 15 });
  });

  test('out of fuel fails with its code', async () => {
    const task = await client.submitWasm(SPIN, {}, { maxExecutionTimeSec: 1 });
    const info = await task.wait({ timeoutMs: WAIT });
    assert.equal(info.status, 'failed');
    assert.equal(info.errorCode, 'out_of_fuel', info.error);
    await assert.rejects(task.result(), (e) => e instanceof TaskFailedError && e.code === 'out_of_fuel' && e.taskId === task.id);
  });

  test('the same task_id is the same task', async () => {
    const taskId = randomUUID();
    const a = await client.submitWasm(SUM, { x: 1 }, { taskId });
    const b = await client.submitWasm(SUM, { x: 1 }, { taskId });
    assert.equal(a.id, taskId);
    assert.equal(b.id, taskId);
    assert.deepEqual((await a.wait({ timeoutMs: WAIT })).output, { sum: 1 });
    const listed = (await client.tasks({ limit: 1000 })).filter((t) => t.task_id === taskId);
    assert.equal(listed.length, 1);
    const completed = await client.tasks({ status: 'completed', limit: 1000 });
    assert.ok(completed.every((t) => t.status === 'completed'));
  });

  test('cancel a waiting task, then again', async () => {
    // No node of `ambient up` has a GPU, so this task waits until cancelled.
    const task = await client.submitWasm(SUM, { x: 3 }, { requireGpu: true });
    await assert.rejects(task.wait({ timeoutMs: 600 }), TaskTimeoutError);
    const waiting = await task.info();
    assert.equal(waiting.status, 'pending');
    assert.match(waiting.status_reason, /GPU/);
    assert.equal((await task.cancel()).status, 'cancelled');
    await assert.rejects(task.cancel(), (e) => e instanceof ConflictError && e.status === 409 && e.code === 'task_finished');
  });
});

describe('computation', () => {
  test('listed shards reduced by sum, with progress in shards', async () => {
    const shards = [{ n: [1, 2] }, { n: [30] }, '7 and 8', [100, 200]];
    const seen = [];
    const info = await client.submitComputation(SUM, { shards, reduce: 'sum' })
      .then((t) => t.wait({ timeoutMs: WAIT, onProgress: (i) => seen.push(i) }));
    assert.equal(info.status, 'completed');
    assert.deepEqual(info.output, { sum: 348 });
    assert.deepEqual(info.progress, { done: 4, total: 4 });
    assert.equal(seen.at(-1), info);
    const reported = seen.filter((i) => i.progress).map((i) => i.progress.done);
    assert.deepEqual(reported, [...reported].sort((a, b) => a - b));
  });

  test('a range, in shard order with concat', async () => {
    const [start, end, n] = [10, 1000, 6];
    const info = await client.submitComputation(SUM, { range: { start, end, shards: n }, reduce: 'concat' })
      .then((t) => t.wait({ timeoutMs: WAIT }));
    const span = end - start;
    const expected = Array.from({ length: n }, (_, k) => {
      const s = start + Math.floor((span * k) / n);
      const e = start + Math.floor((span * (k + 1)) / n);
      return { sum: s + e + k };
    });
    assert.deepEqual(info.output, expected);
  });
});

describe('templates', () => {
  // The π template's count, computed here with BigInt: point i is splitmix64(i + 1) in two halves.
  const piHits = (n) => {
    const M = (1n << 64n) - 1n;
    let hits = 0;
    for (let s = 0n; s < BigInt(n); s++) {
      let z = ((s + 1n) * 0x9E3779B97F4A7C15n) & M;
      z = ((z ^ (z >> 30n)) * 0xBF58476D1CE4E5B9n) & M;
      z = ((z ^ (z >> 27n)) * 0x94D049BB133111EBn) & M;
      z ^= z >> 31n;
      const [x, y] = [z >> 32n, z & 0xFFFFFFFFn];
      if (x * x <= (~(y * y) & M)) hits++;
    }
    return hits;
  };

  test('listed, rendered with parameters, submitted', async () => {
    const names = (await client.templates()).map((t) => t.name);
    for (const n of ['pi', 'photo-filter', 'onnx-mlp', 'zk-hash-chain', 'federated']) assert.ok(names.includes(n), n);
    const body = await client.renderTemplate('pi', { samples: 5000, shards: 2 });
    assert.deepEqual(body.inputs.range, { start: 0, end: 5000, shards: 2 });
    const info = await client.submitTemplate('pi', { samples: 5000, shards: 2 }).then((t) => t.wait({ timeoutMs: WAIT }));
    assert.deepEqual(info.output, { hits: piHits(5000), samples: 5000 });
    await assert.rejects(client.renderTemplate('nope'), (e) => e instanceof NotFoundError && e.code === 'unknown_template');
  });
});

describe('inference', () => {
  const model = path.join(REPO, 'tests', 'fixtures', 'onnx', 'mlp.onnx');
  const reference = JSON.parse(readFileSync(path.join(REPO, 'tests', 'fixtures', 'onnx', 'mlp.json'), 'utf8'));
  const x = tensor(Float32Array.from(reference.inputs.x.data), reference.inputs.x.shape);

  const check = (info) => {
    assert.equal(info.status, 'completed', info.error ?? '');
    const y = info.tensors().y;
    assert.equal(y.dtype, 'float32');
    assert.ok(y.data instanceof Float32Array);
    assert.deepEqual(y.shape, reference.outputs.y.shape);
    y.data.forEach((v, i) => assert.ok(Math.abs(v - reference.outputs.y.data[i]) < 1e-4, `y[${i}] = ${v}`));
  };

  test('an uploaded model, then the same blob again, then inline', async () => {
    check(await client.submitInference(model, { x }).then((t) => t.wait({ timeoutMs: WAIT })));
    const blob = await client.uploadBlob(model);
    assert.match(blob.sha256, /^[0-9a-f]{64}$/);
    check(await client.submitInference(blob, { x }).then((t) => t.wait({ timeoutMs: WAIT })));
    check(await client.submitInference(model, { x }, { inline: true }).then((t) => t.wait({ timeoutMs: WAIT })));
  });

  test('a wrong input name fails the task', async () => {
    const info = await client.submitInference(model, { nope: x }).then((t) => t.wait({ timeoutMs: WAIT }));
    assert.equal(info.status, 'failed');
    assert.equal(info.errorCode, 'invalid_input', info.error);
    assert.throws(() => info.tensors(), TypeError);
  });

  test('NaN and infinities travel as their names, both ways', async () => {
    // Out: the body names them, since JSON numbers lack them.
    const body = bodies.inference({ x: tensor(Float32Array.of(NaN, Infinity, -Infinity, 0.5), [1, 4]) }, { modelSha256: 'ab'.repeat(32) });
    assert.deepEqual(body.inputs.tensors.x.data, ['NaN', 'Infinity', '-Infinity', 0.5]);
    // Through the network: the MLP's answer to an input with ±∞ (tract's, whatever it is) comes
    // back decoded, and a result naming them decodes to the values.
    const info = await client.submitInference(model, { x: tensor(Float32Array.of(Infinity, -Infinity, 1, 2), [1, 4]) }, { inline: true })
      .then((t) => t.wait({ timeoutMs: WAIT }));
    assert.equal(info.status, 'completed', info.error);
    for (const v of Object.values(info.tensors())) assert.ok(v.data instanceof Float32Array);
    const named = new TaskInfo({ task_id: 't', status: 'completed', result: { output: { device: 'cpu', outputs: { y: { dtype: 'float32', shape: [3], data: ['NaN', 'Infinity', '-Infinity'] } } } } });
    const y = named.tensors().y.data;
    assert.ok(Number.isNaN(y[0]) && y[1] === Infinity && y[2] === -Infinity, `${y}`);
  });

  test('values JSON cannot carry are refused before sending', async () => {
    await assert.rejects(client.submitInference(model, { x: { dtype: 'float16', shape: [1], data: [1] } }, { inline: true }), TypeError);
  });
});

describe('zk_proof', () => {
  test('a hash chain, its proof fetched and verified again', async () => {
    const info = await client.submitZk('hash_chain', { x: 7, n: 64 }).then((t) => t.wait({ timeoutMs: WAIT }));
    assert.equal(info.status, 'completed');
    assert.ok(info.proof_id);
    const proof = await client.proof(info.proof_id);
    assert.equal(proof.task_id, info.task_id);
    assert.equal(await client.verifyProof({ circuit: 'hash_chain', n: 64, publicInputs: proof.public_inputs, proof: proof.proof }), true);
    const other = [...proof.public_inputs];
    other[2] = (BigInt(other[2]) + 1n).toString();
    assert.equal(await client.verifyProof({ circuit: 'hash_chain', n: 64, publicInputs: other, proof: proof.proof }), false);
  });
});

describe('federated_learning', () => {
  const DATASET = 'toy_separable';
  const EVAL = separableCsv(200, 3);
  let dataNodes = null;

  before(async () => {
    dataNodes = await joinDataNodes(net, client, DATASET, [separableCsv(200, 1), separableCsv(200, 2)]);
  });
  after(async () => { await dataNodes?.stop(); });

  test('a job waits for nodes that hold its data set', async () => {
    const task = await client.submitFederated('breast_cancer', {
      minNodes: 2, rounds: 2, epsilon: 8, delta: 1e-5, eval_csv: EVAL, eval_label: 'target',
    });
    await assert.rejects(task.wait({ timeoutMs: 1000 }), TaskTimeoutError);
    const info = await task.info();
    assert.equal(info.status, 'pending');
    assert.match(info.status_reason, /breast_cancer/);
    assert.equal((await task.cancel()).status, 'cancelled');
  });

  test('an impossible job is refused at submission', async () => {
    await assert.rejects(client.submitFederated(DATASET, { minNodes: 1 }),
      (e) => e instanceof BadRequestError && e.code === 'invalid_inputs' && /min_nodes/.test(e.message));
  });

  test('training on two joined agents, progress in rounds', async (t) => {
    if (!dataNodes) {
      t.skip('this `ambient up` writes no join_token, so no agent holding a data set can join it');
      return;
    }
    const seen = [];
    const info = await client.submitFederated(DATASET, { minNodes: 2, rounds: 4, eval_csv: EVAL, eval_label: 'target', seed: 3 })
      .then((task) => task.wait({ timeoutMs: WAIT, onProgress: (i) => seen.push(i) }));
    assert.equal(info.status, 'completed', info.error ?? '');
    assert.deepEqual(info.output.rounds.map((r) => r.round), [1, 2, 3, 4]);
    assert.equal(info.output.total_rows, 400);
    assert.ok(info.output.rounds.at(-1).eval_accuracy >= 0.85, JSON.stringify(info.output.rounds));
    assert.deepEqual(info.progress, { done: 5, total: 5 });
    assert.equal(seen.at(-1), info);
  });
});

describe('ambient up --dataset', () => {
  // A data scientist's own CSV, split across the local agents: a wasm task, an inference with
  // typed-array tensors and a federated job over the CSV, with this client only.
  const ROWS = 300;
  let own;
  let ownClient;
  before(async () => {
    const csv = path.join(tmpdir(), `claims-${randomUUID()}.csv`);
    writeFileSync(csv, separableCsv(ROWS, 7));
    own = await startNetwork(['--dataset', `claims=${csv}:target`]);
    ownClient = await Client.fromConnection(own.connectionPath);
  });
  after(async () => { await own?.stop(); });

  test('wasm, inference and a federated job on ones own data', async () => {
    const held = (await ownClient.nodes()).flatMap((n) => n.health?.datasets ?? []);
    assert.equal(held.length, 3);
    assert.equal(held.reduce((a, d) => a + d.rows, 0), ROWS);
    const inputs = { numbers: [7, 8, 9] };
    const wasm = await ownClient.submitWasm(SUM, inputs).then((t) => t.wait({ timeoutMs: WAIT }));
    assert.deepEqual(wasm.output, { sum: expectedSum(inputs) });
    const reference = JSON.parse(readFileSync(path.join(REPO, 'tests', 'fixtures', 'onnx', 'mlp.json'), 'utf8'));
    const x = tensor(Float32Array.from(reference.inputs.x.data), reference.inputs.x.shape);
    const model = path.join(REPO, 'tests', 'fixtures', 'onnx', 'mlp.onnx');
    const ran = await ownClient.submitInference(model, { x }).then((t) => t.wait({ timeoutMs: WAIT }));
    assert.equal(ran.status, 'completed', ran.error ?? '');
    assert.ok(ran.tensors().y.data instanceof Float32Array);
    const job = await ownClient.submitFederated('claims', {
      minNodes: 3, rounds: 3, eval_csv: separableCsv(200, 8), eval_label: 'target', seed: 5,
    }).then((t) => t.wait({ timeoutMs: WAIT }));
    assert.equal(job.status, 'completed', job.error ?? '');
    assert.equal(job.output.total_rows, ROWS);
    assert.ok(job.output.rounds.at(-1).eval_accuracy >= 0.85, JSON.stringify(job.output.rounds));
  });
});

describe('errors', () => {
  test('invalid wasm is a bad request with its code', async () => {
    await assert.rejects(client.submitWasm(Buffer.from('not wasm')), (e) => {
      assert.ok(e instanceof BadRequestError && e instanceof ApiError && e instanceof AmbientError);
      assert.equal(e.status, 400);
      assert.equal(e.code, 'invalid_wasm');
      assert.ok(e.message.length > 0);
      return true;
    });
  });

  test('unknown task type, proof unsupported, bad requirements', async () => {
    await assert.rejects(client.submit({ task_type: 'mining' }), (e) => e instanceof BadRequestError && e.code === 'unknown_task_type');
    const body = await bodies.wasm(SUM, {});
    body.requirements.require_proof = true;
    await assert.rejects(client.submit(body), (e) => e instanceof UnprocessableError && e.status === 422 && e.code === 'proof_unsupported');
    await assert.rejects(client.submitWasm(SUM, {}, { minNodes: 1000 }), (e) => e.code === 'invalid_requirements');
  });

  test('a refused submission names every field to fix (the seed\'s photo example, verbatim)', async () => {
    const userImage = 'the user\'s photo';
    await assert.rejects(client.submit({
      task_type: 'wasm_execution',
      wasm_module: '<base64-encoded-filter-algorithm>',
      inputs: { image: userImage },
      requirements: {
        min_nodes: 1,
        max_execution_time_sec: 30,
        require_gpu: true,
        require_proof: false
      }
    }), (e) => e instanceof BadRequestError && e.code === 'invalid_base64'
      && e.problems.length === 1 && e.problems[0].field === 'wasm_module'
      && e.problems[0].problem === 'invalid' && /base64/.test(e.problems[0].expected)
      && /wasm_module/.test(e.message));
  });

  test('wrong key, unknown task, no coordinator', async () => {
    const bad = new Client({ apiUrl: client.apiUrl, apiKey: 'not-the-key' });
    await assert.rejects(bad.tasks(), (e) => e instanceof AuthenticationError && e.status === 401 && e.code === 'unauthorized');
    await assert.rejects(client.info(randomUUID()), (e) => e instanceof NotFoundError && e.code === 'task_not_found');
    const net2 = await import('node:net');
    const port = await new Promise((resolve) => {
      const s = net2.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
    });
    const gone = new Client({ apiUrl: `http://127.0.0.1:${port}`, apiKey: 'k', retries: 0 });
    await assert.rejects(gone.health(), TransportError);
  });

  test('health and nodes', async () => {
    assert.equal((await client.health()).status, 'ok');
    const nodes = await client.nodes();
    assert.ok(nodes.length >= 3);
    assert.equal((await client.node(nodes[0].node_id)).node_id, nodes[0].node_id);
    assert.ok('reputation' in (await client.reputation(nodes[0].node_id, { limit: 5 })));
  });
});

describe('mqtt', () => {
  test('a wasm task over the broker', async () => {
    const mq = await client.mqtt();
    try {
      const inputs = { numbers: [40, 2, 100] };
      const task = await mq.submitWasm(SUM, inputs, { minNodes: 2 });
      const seen = [];
      const info = await task.wait({ timeoutMs: WAIT, onProgress: (i) => seen.push(i.status) });
      // On failure, say why, and how the nodes stood (a quorum needs trusted nodes).
      const why = async () => JSON.stringify({ info, nodes: (await client.nodes()).map((n) => [n.node_id, n.state, n.reputation]) });
      assert.equal(info.status, 'completed', info.status === 'completed' ? '' : await why());
      assert.deepEqual(info.output, { sum: expectedSum(inputs) });
      assert.ok(['pending', 'assigned'].includes(seen[0]), seen.join());
      assert.deepEqual((await client.info(task.id)).output, { sum: 142 });
    } finally {
      await mq.close();
    }
  });

  test('a rejection is the typed error', async () => {
    const mq = await client.mqtt();
    try {
      const task = await mq.submitWasm(Buffer.from('not wasm'));
      await assert.rejects(task.wait({ timeoutMs: WAIT }),
        (e) => e instanceof BadRequestError && e.code === 'invalid_wasm' && e.status === null && e.taskId === task.id);
    } finally {
      await mq.close();
    }
  });

  test('a wrong broker password', async () => {
    const c = net.connection;
    await assert.rejects(MqttClient.connect({ host: c.mqtt_host, port: c.mqtt_port, username: c.mqtt_username,
      password: 'wrong', connectTimeoutMs: 3000 }), TransportError);
  });
});
