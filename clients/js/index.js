// ambient-vcp: a client for Ambient VCP, an open compute network. Submit tasks to a coordinator
// over REST (fetch) or MQTT (mqtt.js), follow them, and read their results.
//
// Layout of this file:
//   errors        AmbientError and its subclasses, apiError()
//   TaskInfo      what the API returns for a task, with tensors as typed arrays
//   bodies        the TaskSubmission bodies each submit* helper sends (exported as `bodies`)
//   Client, Task  the REST client and its task handles
//   MqttClient    submission over the broker, MqttTask
//
// TaskInfo keeps the API's field names (task_id, status_reason, …) as they are on the wire;
// what this package adds (terminal, output, errorCode, tensors()) is camelCase.

import { readFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import mqtt from 'mqtt';

export const VERSION = '0.1.0';
const USER_AGENT = `ambient-vcp-js/${VERSION}`;

// ---------------------------------------------------------------------------------------------
// Errors

/** Base class of every error this package throws. */
export class AmbientError extends Error {
  /**
   * @param {string} message
   * @param {{code?: string|null, status?: number|null, taskId?: string|null, cause?: unknown}} [opts]
   */
  constructor(message, { code = null, status = null, taskId = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    /** The API's stable error code, or a task's failure code; null when there is none. */
    this.code = code;
    /** The HTTP status, or null when no HTTP answer came (MQTT, transport, timeout). */
    this.status = status;
    /** The task concerned, when one is. */
    this.taskId = taskId;
  }
}

/** The coordinator refused a request with its {error, message} body. */
export class ApiError extends AmbientError {
  /**
   * @param {string} message
   * @param {{code?: string|null, status?: number|null, taskId?: string|null, problems?: object[]}} [opts]
   */
  constructor(message, opts = {}) {
    super(message, opts);
    /** For a refused submission: every field to add or change ({field, problem, expected, got?, example?}). */
    this.problems = opts.problems ?? [];
  }
}
/** 400: malformed request or invalid task (invalid_wasm, invalid_inputs, …). */
export class BadRequestError extends ApiError {}
/** 401: missing or wrong API key (unauthorized). */
export class AuthenticationError extends ApiError {}
/** 404: no such task, node or proof (task_not_found, …). */
export class NotFoundError extends ApiError {}
/** 409: task_finished or task_id_taken. */
export class ConflictError extends ApiError {}
/** 413: payload_too_large or module_too_large. */
export class PayloadTooLargeError extends ApiError {}
/** 422: proof_unsupported. */
export class UnprocessableError extends ApiError {}
/** 5xx (internal). */
export class ServerError extends ApiError {}
/** 503: the scheduler is unavailable (unavailable, no_leader); already retried. */
export class UnavailableError extends ServerError {}
/** No answer from the coordinator or the broker. */
export class TransportError extends AmbientError {}
/** A wait ended before the task did; the task goes on. */
export class TaskTimeoutError extends AmbientError {}
/** A task ended failed, expired or cancelled; `info` is the task as it ended. */
export class TaskFailedError extends AmbientError {
  /** @param {TaskInfo} info */
  constructor(info) {
    const text = info.error ?? info.status_reason ?? `task ${info.status}`;
    super(`task ${info.task_id} ${info.status}: ${text}`, {
      code: info.errorCode ?? info.status,
      taskId: info.task_id,
    });
    this.info = info;
  }
}

const codes = (status, list) => Object.fromEntries(list.map((c) => [c, status]));

/** HTTP status of every error code the REST API documents (README, "REST API"). */
export const CODE_STATUS = Object.freeze({
  ...codes(400, ['invalid_json', 'json_too_deep', 'unknown_task_type', 'missing_module',
    'invalid_base64', 'invalid_wasm', 'invalid_requirements', 'invalid_inputs', 'unknown_model',
    'invalid_task_id', 'invalid_query', 'empty_blob', 'bad_request', 'invalid_request',
    'unsupported_circuit', 'invalid_sha256']),
  ...codes(401, ['unauthorized', 'stale_request', 'bad_signature', 'replayed_request']),
  ...codes(404, ['task_not_found', 'node_not_found', 'proof_not_found', 'not_found']),
  ...codes(409, ['task_id_taken', 'task_finished']),
  ...codes(413, ['payload_too_large', 'module_too_large']),
  proof_unsupported: 422,
  internal: 500,
  unavailable: 503,
  no_leader: 503,
});

const BY_STATUS = {
  400: BadRequestError, 401: AuthenticationError, 404: NotFoundError, 409: ConflictError,
  413: PayloadTooLargeError, 422: UnprocessableError, 503: UnavailableError,
};

/**
 * The error for an API refusal. `status` is the HTTP status (null over MQTT, where the class is
 * chosen from the code as REST would have answered it).
 * @param {number|null} status
 * @param {unknown} body the decoded {error, message, task_id?}, or anything else
 * @param {string} [text] the raw body, for an answer that is not an API error
 * @returns {ApiError}
 */
export function apiError(status, body, text = '') {
  let code = 'http_error';
  let message = text.trim().slice(0, 500) || `HTTP ${status}`;
  let taskId = null;
  let problems = [];
  if (body && typeof body === 'object' && typeof body.error === 'string') {
    code = body.error;
    message = String(body.message || code);
    taskId = body.task_id ?? null;
    problems = Array.isArray(body.problems) ? body.problems : [];
  }
  const effective = status ?? CODE_STATUS[code] ?? null;
  const Cls = BY_STATUS[effective] ?? (effective >= 500 ? ServerError : ApiError);
  const err = new Cls(message, { code, status, taskId, problems });
  return err;
}

// ---------------------------------------------------------------------------------------------
// Tasks as the API reports them

/** Statuses a task never leaves. */
export const TERMINAL = Object.freeze(['completed', 'failed', 'expired', 'cancelled']);

/** Typed array class of each dtype an inference task accepts. */
export const DTYPES = Object.freeze({
  float32: Float32Array,
  float64: Float64Array,
  int32: Int32Array,
  int64: BigInt64Array,
  uint8: Uint8Array,
});

/**
 * A tensor from a typed array and a shape; the dtype follows from the array's type
 * (Float32Array → float32, Float64Array → float64, Int32Array → int32, BigInt64Array → int64,
 * Uint8Array → uint8).
 */
export function tensor(data, shape) {
  const dtype = Object.keys(DTYPES).find((k) => data instanceof DTYPES[k]);
  if (!dtype) throw new TypeError('tensor(): use a Float32Array, Float64Array, Int32Array, BigInt64Array or Uint8Array');
  return { dtype, shape: [...shape], data };
}

const MAX_EXACT = 2n ** 53n;

/** One tensor as the API takes it: {dtype, shape, data: number[]}. */
function tensorToJson(name, t) {
  if (!t || typeof t !== 'object' || !('dtype' in t) || !('shape' in t) || !('data' in t)) {
    throw new TypeError(`tensor ${name}: give {dtype, shape, data} or tensor(typedArray, shape)`);
  }
  if (!(t.dtype in DTYPES)) {
    throw new TypeError(`tensor ${name}: dtype ${t.dtype} is not supported; use one of ${Object.keys(DTYPES).join(', ')}`);
  }
  const shape = t.shape.map(Number);
  const data = Array.from(t.data, (v) => {
    if (typeof v === 'bigint') {
      if (v > MAX_EXACT || v < -MAX_EXACT) throw new RangeError(`tensor ${name}: int64 values beyond 2**53 would lose precision`);
      return Number(v);
    }
    // JSON numbers lack NaN and ±infinity: they travel as their names.
    if (!Number.isFinite(v)) return Number.isNaN(v) ? 'NaN' : (v > 0 ? 'Infinity' : '-Infinity');
    return v;
  });
  const n = shape.reduce((a, b) => a * b, 1);
  if (n !== data.length) throw new RangeError(`tensor ${name}: shape [${shape}] needs ${n} values, data has ${data.length}`);
  return { dtype: t.dtype, shape, data };
}

/** A tensor of the API as {dtype, shape, data: TypedArray}. */
function tensorFromJson(t) {
  const Cls = DTYPES[t.dtype];
  if (!Cls) throw new TypeError(`unknown dtype ${t.dtype}`);
  const data = Cls === BigInt64Array
    ? BigInt64Array.from(t.data, (v) => BigInt(Math.round(v)))
    : Cls.from(t.data, Number); // "NaN", "Infinity", "-Infinity" → the values
  return { dtype: t.dtype, shape: [...t.shape], data };
}

const CODE_RE = /^([a-z][a-z0-9_]*)(?::| on )/;

/** A task as the coordinator reports it (GET /api/v1/tasks/{id}, or over MQTT). */
export class TaskInfo {
  /** @param {Record<string, any>} json */
  constructor(json) {
    /** @type {Record<string, any>} the whole object, as received */
    this.raw = json;
    this.task_id = String(json.task_id);
    this.task_type = json.task_type;
    this.status = json.status;
    this.assigned_nodes = json.assigned_nodes ?? [];
    this.result = json.result ?? null;
    this.proof_id = json.proof_id ?? null;
    this.created_at = json.created_at ? new Date(json.created_at) : null;
    this.updated_at = json.updated_at ? new Date(json.updated_at) : null;
    this.error = json.error ?? null;
    this.status_reason = json.status_reason ?? null;
    this.attempts = json.attempts ?? 0;
    this.progress = json.progress ? { done: json.progress.done, total: json.progress.total } : null;
  }

  /** True once the task can change no more. */
  get terminal() { return TERMINAL.includes(this.status); }

  /** True when the task finished with a result. */
  get completed() { return this.status === 'completed'; }

  /** The result's `output`, or null before completion. */
  get output() { return this.result?.output ?? null; }

  /** The nodes whose answers made the result. */
  get nodes() { return this.result?.nodes ?? []; }

  /** The failure code that starts `error` (out_of_fuel, invalid_input, …), read from its text. */
  get errorCode() {
    const m = this.error ? CODE_RE.exec(this.error) : null;
    return m ? m[1] : null;
  }

  /** An inference result's outputs as {name: {dtype, shape, data: TypedArray}}. */
  tensors() {
    const outputs = this.output?.outputs;
    if (!outputs || typeof outputs !== 'object') {
      throw new TypeError(`task ${this.task_id} has no inference outputs (status ${this.status})`);
    }
    return Object.fromEntries(Object.entries(outputs).map(([k, v]) => [k, tensorFromJson(v)]));
  }

  /** Returns this when completed; throws TaskFailedError when it ended otherwise. */
  raiseForStatus() {
    if (this.terminal && !this.completed) throw new TaskFailedError(this);
    return this;
  }
}

// ---------------------------------------------------------------------------------------------
// Bodies

async function readBytes(value, what) {
  let bytes;
  if (typeof value === 'string' || value instanceof URL) bytes = new Uint8Array(await readFile(value));
  else if (value instanceof ArrayBuffer) bytes = new Uint8Array(value);
  else if (ArrayBuffer.isView(value)) bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  else throw new TypeError(`${what}: give bytes (Uint8Array, Buffer, ArrayBuffer) or a file path`);
  if (bytes.length === 0) throw new RangeError(`${what} is empty`);
  return bytes;
}

const b64 = (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');

function requirements({ minNodes, maxExecutionTimeSec, requireGpu, requireProof } = {}) {
  const r = {};
  if (minNodes != null) r.min_nodes = minNodes;
  if (maxExecutionTimeSec != null) r.max_execution_time_sec = maxExecutionTimeSec;
  if (requireGpu != null) r.require_gpu = requireGpu;
  if (requireProof != null) r.require_proof = requireProof;
  return r;
}

function task(taskType, inputs, reqs, taskId, wasmModule) {
  const body = { task_type: taskType };
  if (wasmModule != null) body.wasm_module = wasmModule;
  body.inputs = inputs;
  if (Object.keys(reqs).length) body.requirements = reqs;
  if (taskId != null) body.task_id = String(taskId);
  return body;
}

/**
 * The TaskSubmission bodies the submit* helpers send, built as coordinator/openapi.json
 * describes them. Only the requirements given are sent; the coordinator fills in the rest.
 */
export const bodies = Object.freeze({
  /** A copy of `body` with a task_id (a fresh UUID when it has none). */
  withTaskId(body) {
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw new TypeError('a task is a JSON object');
    const copy = structuredClone(body);
    if (copy.task_id == null) copy.task_id = randomUUID();
    return copy;
  },
  async wasm(module, inputs = {}, { minNodes = 1, maxExecutionTimeSec, requireGpu, taskId } = {}) {
    return task('wasm_execution', inputs ?? {}, requirements({ minNodes, maxExecutionTimeSec, requireGpu }),
      taskId, b64(await readBytes(module, 'wasm module')));
  },
  async computation(kernel, { shards, range, reduce, minNodes, maxExecutionTimeSec, requireGpu, taskId } = {}) {
    if ((shards == null) === (range == null)) throw new TypeError('give exactly one of shards and range');
    const inputs = { kernel_base64: b64(await readBytes(kernel, 'kernel')) };
    if (shards != null) inputs.shards = [...shards];
    else inputs.range = { start: range.start, end: range.end, shards: range.shards };
    if (reduce != null) inputs.reduce = reduce;
    return task('computation', inputs, requirements({ minNodes, maxExecutionTimeSec, requireGpu }), taskId);
  },
  inference(tensors, { modelSha256, modelBase64, maxExecutionTimeSec, requireGpu, taskId } = {}) {
    if ((modelSha256 == null) === (modelBase64 == null)) throw new TypeError('give exactly one of modelSha256 and modelBase64');
    const names = Object.keys(tensors ?? {});
    if (!names.length) throw new TypeError('an inference task needs at least one input tensor');
    const inputs = modelSha256 != null ? { model_sha256: modelSha256 } : { model_base64: modelBase64 };
    inputs.tensors = Object.fromEntries(names.map((k) => [k, tensorToJson(k, tensors[k])]));
    return task('inference', inputs, requirements({ maxExecutionTimeSec, requireGpu }), taskId);
  },
  zk(circuit, inputs, { maxExecutionTimeSec, taskId } = {}) {
    const body = { circuit, ...inputs };
    if (typeof body.x === 'number' || typeof body.x === 'bigint') body.x = String(body.x);
    return task('zk_proof', body, requirements({ maxExecutionTimeSec }), taskId);
  },
  federated(dataset, { minNodes = 2, maxExecutionTimeSec, taskId, ...job } = {}) {
    const inputs = { dataset };
    for (const [k, v] of Object.entries(job)) if (v != null) inputs[k] = v;
    return task('federated_learning', inputs, requirements({ minNodes, maxExecutionTimeSec }), taskId);
  },
});

// ---------------------------------------------------------------------------------------------
// REST

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Reads a connection.json written by `ambient up`. */
export async function loadConnection(path = 'ambient-data/connection.json') {
  const c = JSON.parse(await readFile(path, 'utf8'));
  if (!c.api_url || !c.api_key) throw new TypeError(`${path} is not a connection file`);
  return c;
}

function changedKey(info) {
  return JSON.stringify([info.status, info.status_reason, info.progress]);
}

/** A submitted task: a handle that reads, waits for and cancels it. */
export class Task {
  constructor(client, id, submitted = null) {
    this.client = client;
    this.id = id;
    /** The task as the submission's answer reported it. */
    this.submitted = submitted;
  }
  /** The task now. */
  info() { return this.client.info(this.id); }
  /** Polls until the task ends; resolves with it whatever its final status. */
  wait(opts) { return this.client.wait(this.id, opts); }
  /** Waits, then resolves with the output; rejects with TaskFailedError unless completed. */
  async result(opts) { return (await this.wait(opts)).raiseForStatus().output; }
  /** Cancels the task; rejects with ConflictError (task_finished) if it had finished. */
  cancel() { return this.client.cancel(this.id); }
}

/** A client of a coordinator's REST API. */
export class Client {
  /**
   * @param {object} options
   * @param {string} options.apiUrl base URL, such as http://127.0.0.1:8080
   * @param {string} options.apiKey a submitter's API key
   * @param {number} [options.timeoutMs=30000] per HTTP request
   * @param {number} [options.retries=2] extra tries of a request that got no answer or 503
   * @param {number} [options.pollIntervalMs=250] first pause between polls of a waiting task
   * @param {number} [options.maxPollIntervalMs=2000] longest pause between polls
   * @param {object} [options.connection] a connection.json's content, for mqtt()
   */
  constructor({ apiUrl, apiKey, timeoutMs = 30_000, retries = 2, pollIntervalMs = 250,
    maxPollIntervalMs = 2_000, connection = null } = {}) {
    if (!/^https?:\/\//.test(apiUrl ?? '')) throw new TypeError(`apiUrl must start with http:// or https://, not ${apiUrl}`);
    if (!apiKey) throw new TypeError('apiKey is empty');
    if (!(pollIntervalMs > 0 && maxPollIntervalMs >= pollIntervalMs)) throw new RangeError('need 0 < pollIntervalMs <= maxPollIntervalMs');
    this.apiUrl = apiUrl.replace(/\/+$/, '');
    this.apiKey = apiKey;
    this.timeoutMs = timeoutMs;
    this.retries = retries;
    this.pollIntervalMs = pollIntervalMs;
    this.maxPollIntervalMs = maxPollIntervalMs;
    this.connection = connection;
  }

  /** A client for the network a connection.json describes (written by `ambient up`). */
  static async fromConnection(path = 'ambient-data/connection.json', options = {}) {
    const c = await loadConnection(path);
    return new Client({ apiUrl: c.api_url, apiKey: c.api_key, connection: c, ...options });
  }

  async #request(method, path, { json, body, params, contentType } = {}) {
    let url = this.apiUrl + path;
    if (params) {
      const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v != null).map(([k, v]) => [k, String(v)]));
      if ([...q].length) url += `?${q}`;
    }
    const headers = { authorization: `Bearer ${this.apiKey}`, 'user-agent': USER_AGENT };
    if (json !== undefined) {
      body = JSON.stringify(json);
      contentType = 'application/json';
    }
    if (contentType) headers['content-type'] = contentType;
    for (let attempt = 0; ; attempt++) {
      let resp = null;
      let failure = null;
      try {
        resp = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(this.timeoutMs) });
      } catch (e) {
        failure = e;
      }
      if (attempt < this.retries && (resp === null || resp.status === 503)) {
        await resp?.arrayBuffer().catch(() => {});
        await sleep(Math.min(500 * 2 ** attempt, 5_000));
        continue;
      }
      if (resp === null) {
        const why = failure?.cause?.code ?? failure?.name ?? 'error';
        throw new TransportError(`${method} ${url}: ${why}: ${failure?.cause?.message ?? failure?.message}`, { cause: failure });
      }
      const text = await resp.text();
      let decoded;
      try { decoded = JSON.parse(text); } catch { decoded = undefined; }
      if (resp.ok) {
        if (decoded === undefined) throw new TransportError(`${method} ${url} answered ${resp.status} with a body that is not JSON`, { status: resp.status });
        return decoded;
      }
      throw apiError(resp.status, decoded, text);
    }
  }

  /** Submits any TaskSubmission body (a task_id is added when it has none). */
  async submit(body) {
    const info = new TaskInfo(await this.#request('POST', '/api/v1/tasks', { json: bodies.withTaskId(body) }));
    return new Task(this, info.task_id, info);
  }

  /** A wasm_execution task: `module` (bytes or a .wasm path) with `inputs` as JSON on stdin. */
  async submitWasm(module, inputs = {}, opts = {}) {
    return this.submit(await bodies.wasm(module, inputs, opts));
  }

  /** A sharded computation: opts.shards (a list) or opts.range ({start, end, shards}), opts.reduce. */
  async submitComputation(kernel, opts = {}) {
    return this.submit(await bodies.computation(kernel, opts));
  }

  /**
   * An inference task. `model` is the ONNX bytes or path (uploaded first, unless opts.inline),
   * or {sha256} of an uploaded blob, or null with opts.modelSha256.
   */
  async submitInference(model, tensors, { inline = false, modelSha256, ...opts } = {}) {
    if (model && typeof model === 'object' && typeof model.sha256 === 'string') modelSha256 = model.sha256;
    else if (model != null) {
      const bytes = await readBytes(model, 'model');
      if (inline) return this.submit(bodies.inference(tensors, { modelBase64: b64(bytes), ...opts }));
      modelSha256 = (await this.uploadBlob(bytes)).sha256;
    }
    return this.submit(bodies.inference(tensors, { modelSha256, ...opts }));
  }

  /** A zk_proof task: submitZk('hash_chain', {x: 7, n: 64}) or submitZk('dot', {a, b}). */
  async submitZk(circuit, inputs, opts = {}) {
    return this.submit(bodies.zk(circuit, inputs, opts));
  }

  /** A federated_learning job over the nodes' data set `dataset` (opts: minNodes, rounds, …). */
  async submitFederated(dataset, opts = {}) {
    return this.submit(bodies.federated(dataset, opts));
  }

  /** A handle on a task submitted earlier. */
  task(id) { return new Task(this, id); }

  /** One of the caller's tasks. */
  async info(id) { return new TaskInfo(await this.#request('GET', `/api/v1/tasks/${encodeURIComponent(id)}`)); }

  /** The caller's tasks, newest first. */
  async tasks({ status, limit } = {}) {
    return (await this.#request('GET', '/api/v1/tasks', { params: { status, limit } })).map((t) => new TaskInfo(t));
  }

  /** Cancels a task; ConflictError (task_finished) if it had finished. */
  async cancel(id) { return new TaskInfo(await this.#request('DELETE', `/api/v1/tasks/${encodeURIComponent(id)}`)); }

  /**
   * Polls a task until it ends, pausing from pollIntervalMs, half as long again while nothing
   * changes, up to maxPollIntervalMs.
   * @param {string} id
   * @param {{timeoutMs?: number, onProgress?: (info: TaskInfo) => void, signal?: AbortSignal}} [opts]
   */
  async wait(id, { timeoutMs, onProgress, signal } = {}) {
    const deadline = timeoutMs == null ? Infinity : Date.now() + timeoutMs;
    let delay = this.pollIntervalMs;
    let last = null;
    for (;;) {
      signal?.throwIfAborted();
      const info = await this.info(id);
      const key = changedKey(info);
      const changed = key !== last;
      last = key;
      if (changed) onProgress?.(info);
      if (info.terminal) return info;
      if (Date.now() >= deadline) {
        throw new TaskTimeoutError(`task ${id} is still ${info.status} after ${timeoutMs} ms`, { taskId: id });
      }
      delay = changed ? this.pollIntervalMs : Math.min(delay * 1.5, this.maxPollIntervalMs);
      await sleep(Math.max(0, Math.min(delay, deadline - Date.now())));
    }
  }

  /** Uploads an artifact (an ONNX model); resolves with {sha256, size}. */
  async uploadBlob(data) {
    const bytes = await readBytes(data, 'blob');
    return this.#request('PUT', '/api/v1/blobs', { body: bytes, contentType: 'application/octet-stream' });
  }

  /** A verified proof of one of the caller's zk_proof tasks, with its snarkjs export. */
  proof(id) { return this.#request('GET', `/api/v1/proofs/${encodeURIComponent(id)}`); }

  /** Whether `proof` (base64) verifies against `publicInputs` for the circuit. */
  async verifyProof({ circuit, n, publicInputs, proof }) {
    const r = await this.#request('POST', '/api/v1/proofs/verify', { json: { circuit, n, public_inputs: publicInputs, proof } });
    return r.valid === true;
  }

    /** The coordinator's task templates, with their parameters, defaults and expected outputs. */
  templates() { return this.#request('GET', '/api/v1/templates'); }
  /** Template `name`'s task body with `params` set (the rest at their defaults); submits nothing. */
  async renderTemplate(name, params = {}) {
    const r = await this.#request('POST', `/api/v1/templates/${encodeURIComponent(name)}/render`, { json: { set: params } });
    return r.submission;
  }
  /** Renders template `name` with `params` and submits it: `client.submitTemplate('pi', { samples: 1e9 })`. */
  async submitTemplate(name, params = {}) {
    return this.submit(await this.renderTemplate(name, params));
  }
  /** The circuits zk_proof accepts: each one's size range and the sizes whose keys exist. */
  circuits() { return this.#request('GET', '/api/v1/circuits'); }
  /** Nodes with state, health and reputation. */
  nodes() { return this.#request('GET', '/api/v1/nodes'); }
  /** One node. */
  node(id) { return this.#request('GET', `/api/v1/nodes/${encodeURIComponent(id)}`); }
  /** A node's reputation and recent events. */
  reputation(id, { limit } = {}) { return this.#request('GET', `/api/v1/nodes/${encodeURIComponent(id)}/reputation`, { params: { limit } }); }
  /** The coordinator's health (no key needed). */
  health() { return this.#request('GET', '/api/v1/health'); }

  /** Waits until `count` nodes are online with health; resolves with them. */
  async waitForNodes(count, { timeoutMs = 60_000 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const online = (await this.nodes()).filter((n) => n.state === 'online' && n.health);
      if (online.length >= count) return online;
      if (Date.now() >= deadline) throw new TaskTimeoutError(`${online.length} of ${count} nodes online after ${timeoutMs} ms`);
      await sleep(this.maxPollIntervalMs / 4);
    }
  }

  /** An MqttClient on this client's broker (from fromConnection), connected. */
  async mqtt(options = {}) {
    if (!this.connection) throw new TypeError('this client has no broker details: use Client.fromConnection');
    return MqttClient.fromConnection(this.connection, options);
  }
}

// ---------------------------------------------------------------------------------------------
// MQTT

const PREFIX = 'ambient/v1';

/** `ambient/v1/submit/{submitter}`: where submissions go. */
export const submitTopic = (submitter) => `${PREFIX}/submit/${submitter}`;
/** `ambient/v1/submitters/{submitter}/#`: everything a submitter may read. */
export const submitterFilter = (submitter) => `${PREFIX}/submitters/${submitter}/#`;

class TaskState {
  constructor() {
    this.latest = null;
    this.error = null;
    this.listeners = new Set();
  }
  get unanswered() { return this.latest === null && this.error === null; }
  get done() { return this.error !== null || (this.latest !== null && this.latest.terminal); }
  push({ info, error }) {
    // A redelivered or late message never takes a finished task back.
    if (info && !(this.latest && this.latest.terminal)) this.latest = info;
    if (error && this.latest === null) this.error = error;
    for (const fn of this.listeners) fn();
  }
}

/** A task submitted over MQTT; its state comes from the broker only. */
export class MqttTask {
  constructor(client, id, state) {
    this.client = client;
    this.id = id;
    this.state = state;
  }

  /** The latest state the coordinator published (null before the first); throws a rejection. */
  info() {
    if (this.state.error) throw this.state.error;
    return this.state.latest;
  }

  /**
   * Resolves with the final TaskInfo; rejects with the ApiError of a rejection (status null)
   * or TaskTimeoutError.
   * @param {{timeoutMs?: number, onProgress?: (info: TaskInfo) => void}} [opts]
   */
  wait({ timeoutMs, onProgress } = {}) {
    return new Promise((resolve, reject) => {
      let last = null;
      let timer = null;
      const finish = (fn, value) => {
        this.state.listeners.delete(check);
        if (timer) clearTimeout(timer);
        fn(value);
      };
      const check = () => {
        const { latest, error } = this.state;
        if (error) return finish(reject, error);
        if (latest) {
          const key = changedKey(latest);
          if (key !== last) { last = key; onProgress?.(latest); }
          if (latest.terminal) finish(resolve, latest);
        }
      };
      this.state.listeners.add(check);
      if (timeoutMs != null) {
        timer = setTimeout(() => finish(reject, new TaskTimeoutError(
          `no final status for task ${this.id} over MQTT after ${timeoutMs} ms`, { taskId: this.id })), timeoutMs);
      }
      check();
    });
  }

  /** Waits, then resolves with the output; rejects with TaskFailedError unless completed. */
  async result(opts) { return (await this.wait(opts)).raiseForStatus().output; }
}

/**
 * Submits tasks over the broker (MQTT 3.1.1, clean session). Make one with
 * MqttClient.connect(...) or client.mqtt(). mqtt.js reconnects after a drop and subscribes
 * again; what the coordinator published during the drop is not replayed.
 */
export class MqttClient {
  constructor(client, submitter) {
    this.client = client;
    this.submitter = submitter;
    this.prefix = `${PREFIX}/submitters/${submitter}/`;
    /** @type {Map<string, TaskState>} */
    this.tasks = new Map();
    /** Rejections that could not be matched to a submission, newest last (at most 100). */
    this.unattributedRejections = [];
    client.on('message', (topic, payload) => this.#onMessage(topic, payload));
  }

  /**
   * Connects and subscribes to the submitter's answers before resolving.
   * @param {{host: string, port?: number, username: string, password?: string, submitter?: string,
   *   clientId?: string, keepalive?: number, connectTimeoutMs?: number}} options
   */
  static async connect({ host, port = 1883, username, password, submitter, clientId,
    keepalive = 30, connectTimeoutMs = 10_000 }) {
    const client = mqtt.connect({
      host, port, protocol: 'mqtt', protocolVersion: 4, clean: true, username, password, keepalive,
      // The embedded broker of `ambient up` admits the username, or the username, ':' and a suffix.
      clientId: clientId ?? `${username}:${randomUUID().replaceAll('-', '').slice(0, 12)}`,
      reconnectPeriod: 1_000,
      connectTimeout: connectTimeoutMs,
    });
    client.on('connect', () => client.stream?.setNoDelay?.(true));
    client.on('error', () => {}); // surfaced below, or retried by mqtt.js
    const filter = submitterFilter(submitter ?? username);
    try {
      await new Promise((resolve, reject) => {
        const fail = (why) => {
          clearTimeout(timer);
          client.off('connect', ok);
          reject(new TransportError(`MQTT connection to ${host}:${port} as ${username}: ${why}`));
        };
        const ok = () => { clearTimeout(timer); client.off('close', closed); client.off('error', failed); resolve(); };
        // A broker may close the socket instead of answering a wrong password.
        const closed = () => fail('the broker closed the connection; wrong credentials?');
        const failed = (e) => fail(e.message);
        const timer = setTimeout(() => fail(`no answer in ${connectTimeoutMs} ms`), connectTimeoutMs);
        client.once('connect', ok);
        client.once('close', closed);
        client.once('error', failed);
      });
      const granted = await client.subscribeAsync(filter, { qos: 1 });
      if (granted.some((g) => g.qos === 128)) throw new TransportError(`subscription to ${filter} refused`);
    } catch (e) {
      client.end(true);
      throw e instanceof AmbientError ? e : new TransportError(`MQTT connection to ${host}:${port}: ${e.message}`, { cause: e });
    }
    return new MqttClient(client, submitter ?? username);
  }

  /** A client on the broker a connection.json names. */
  static fromConnection(c, options = {}) {
    if (!c.mqtt_host || !c.mqtt_port || !c.mqtt_username) throw new TypeError('the connection has no broker details');
    return MqttClient.connect({ host: c.mqtt_host, port: c.mqtt_port, username: c.mqtt_username,
      password: c.mqtt_password, submitter: c.submitter, ...options });
  }

  #onMessage(topic, payload) {
    if (!topic.startsWith(this.prefix)) return;
    const rest = topic.slice(this.prefix.length);
    let body;
    try { body = JSON.parse(payload.toString('utf8')); } catch { return; }
    if (rest.startsWith('tasks/')) {
      const id = rest.slice('tasks/'.length);
      const state = this.tasks.get(id);
      if (state && body && typeof body === 'object' && 'task_id' in body) {
        state.push({ info: new TaskInfo(body) });
        if (state.done) this.tasks.delete(id);
      }
    } else if (rest === 'rejections') {
      const error = apiError(null, body, payload.toString('utf8'));
      let id = error.taskId;
      if (!id) {
        // The coordinator leaves task_id out of a refusal by its checks (a module that is not
        // wasm, bad inputs…) even when the submission named one. With one submission
        // unanswered, the refusal can only be that one's.
        const silent = [...this.tasks].filter(([, s]) => s.unanswered);
        if (silent.length === 1) { id = silent[0][0]; error.taskId = id; }
      }
      const state = id ? this.tasks.get(id) : undefined;
      if (!state) {
        this.unattributedRejections.push(error);
        this.unattributedRejections.splice(0, Math.max(0, this.unattributedRejections.length - 100));
        return;
      }
      state.push({ error });
      this.tasks.delete(id);
    }
  }

  /** Publishes any TaskSubmission body (QoS 1); resolves with its handle once the broker acked it. */
  async submit(body) {
    const b = bodies.withTaskId(body);
    const id = String(b.task_id);
    const state = new TaskState();
    this.tasks.set(id, state);
    try {
      await this.client.publishAsync(submitTopic(this.submitter), JSON.stringify(b), { qos: 1 });
    } catch (e) {
      this.tasks.delete(id);
      throw new TransportError(`publish of task ${id} failed: ${e.message}`, { taskId: id, cause: e });
    }
    return new MqttTask(this, id, state);
  }

  /** A wasm_execution task (see Client.submitWasm). */
  async submitWasm(module, inputs = {}, opts = {}) { return this.submit(await bodies.wasm(module, inputs, opts)); }
  /** A sharded computation (see Client.submitComputation). */
  async submitComputation(kernel, opts = {}) { return this.submit(await bodies.computation(kernel, opts)); }
  /** An inference task with the model inline (the broker cannot upload blobs). */
  async submitInference(model, tensors, opts = {}) {
    return this.submit(bodies.inference(tensors, { modelBase64: b64(await readBytes(model, 'model')), ...opts }));
  }
  /** A zk_proof task (see Client.submitZk). */
  async submitZk(circuit, inputs, opts = {}) { return this.submit(bodies.zk(circuit, inputs, opts)); }
  /** A federated_learning job (see Client.submitFederated). */
  async submitFederated(dataset, opts = {}) { return this.submit(bodies.federated(dataset, opts)); }

  /** Disconnects. */
  async close() { await this.client.endAsync(); }
}
