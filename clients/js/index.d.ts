// Types of ambient-vcp (index.js). Written by hand; keep them in step with index.js.

export declare const VERSION: string;

export interface AmbientErrorOptions {
  code?: string | null;
  status?: number | null;
  taskId?: string | null;
  cause?: unknown;
}

/** Base class of every error this package throws. */
export declare class AmbientError extends Error {
  constructor(message: string, options?: AmbientErrorOptions);
  /** The API's stable error code, or a task's failure code; null when there is none. */
  code: string | null;
  /** The HTTP status, or null when no HTTP answer came (MQTT, transport, timeout). */
  status: number | null;
  /** The task concerned, when one is. */
  taskId: string | null;
}
/** One thing to add or change in a refused submission. */
export interface FieldProblem {
  /** The field, as a path in the body: `inputs.dataset`, `requirements.min_nodes`. */
  field: string;
  problem: 'missing' | 'unknown' | 'wrong_type' | 'invalid' | 'conflict';
  /** What the field must be. */
  expected: string;
  /** What was sent, shortened. */
  got?: string;
  /** A value that would do. */
  example?: unknown;
}
/** The coordinator refused a request with its {error, message} body. */
export declare class ApiError extends AmbientError {
  /** For a refused submission: every field to add or change; empty otherwise. */
  problems: FieldProblem[];
}
/** 400: invalid_json, invalid_wasm, invalid_inputs, invalid_requirements, unknown_model, … */
export declare class BadRequestError extends ApiError {}
/** 401: unauthorized. */
export declare class AuthenticationError extends ApiError {}
/** 404: task_not_found, node_not_found, proof_not_found, not_found. */
export declare class NotFoundError extends ApiError {}
/** 409: task_finished, task_id_taken. */
export declare class ConflictError extends ApiError {}
/** 413: payload_too_large, module_too_large. */
export declare class PayloadTooLargeError extends ApiError {}
/** 422: proof_unsupported. */
export declare class UnprocessableError extends ApiError {}
/** 5xx: internal. */
export declare class ServerError extends ApiError {}
/** 503: unavailable, no_leader (already retried). */
export declare class UnavailableError extends ServerError {}
/** No answer from the coordinator or the broker. */
export declare class TransportError extends AmbientError {}
/** A wait ended before the task did; the task goes on. */
export declare class TaskTimeoutError extends AmbientError {}
/** A task ended failed, expired or cancelled. */
export declare class TaskFailedError extends AmbientError {
  constructor(info: TaskInfo);
  info: TaskInfo;
}

/** HTTP status of every error code the REST API documents. */
export declare const CODE_STATUS: Readonly<Record<string, number>>;
/** The error for an API refusal (status null over MQTT). */
export declare function apiError(status: number | null, body: unknown, text?: string): ApiError;

export type TaskType = 'wasm_execution' | 'computation' | 'inference' | 'zk_proof' | 'federated_learning';
export type TaskStatus =
  | 'pending' | 'assigned' | 'running' | 'verifying'
  | 'completed' | 'failed' | 'expired' | 'cancelled';
/** Statuses a task never leaves. */
export declare const TERMINAL: readonly TaskStatus[];

export type DType = 'float32' | 'float64' | 'int32' | 'int64' | 'uint8';
export type TypedArrayOf<D extends DType> =
  D extends 'float32' ? Float32Array :
  D extends 'float64' ? Float64Array :
  D extends 'int32' ? Int32Array :
  D extends 'int64' ? BigInt64Array :
  Uint8Array;
export declare const DTYPES: Readonly<{
  float32: Float32ArrayConstructor;
  float64: Float64ArrayConstructor;
  int32: Int32ArrayConstructor;
  int64: BigInt64ArrayConstructor;
  uint8: Uint8ArrayConstructor;
}>;
/** A tensor as a submit takes it: data as numbers (or bigints for int64) or a typed array. */
export interface TensorInput {
  dtype: DType;
  shape: readonly number[];
  data: ArrayLike<number | bigint> | Iterable<number | bigint>;
}
/** A tensor as TaskInfo.tensors() returns it. */
export interface Tensor<D extends DType = DType> {
  dtype: D;
  shape: number[];
  data: TypedArrayOf<D>;
}
/** A tensor from a typed array and a shape; the dtype follows from the array's type. */
export declare function tensor(
  data: Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array,
  shape: readonly number[],
): TensorInput;

export interface Progress { done: number; total: number }

/** A completed task's result. */
export interface TaskResult {
  output: any;
  output_sha256?: string;
  nodes: string[];
  duration_ms?: number;
  fuel_consumed?: number | null;
  [key: string]: unknown;
}

/** A task as the coordinator reports it. Wire fields keep their API names. */
export declare class TaskInfo {
  constructor(json: Record<string, any>);
  raw: Record<string, any>;
  task_id: string;
  task_type: TaskType;
  status: TaskStatus;
  assigned_nodes: string[];
  result: TaskResult | null;
  /** zk_proof: the verified proof behind the result. */
  proof_id: string | null;
  created_at: Date | null;
  updated_at: Date | null;
  /** Why the task failed or expired. */
  error: string | null;
  /** Why a pending task still waits. */
  status_reason: string | null;
  attempts: number;
  /** Shards of a computation, rounds of a federated job. */
  progress: Progress | null;
  readonly terminal: boolean;
  readonly completed: boolean;
  /** The result's output, or null before completion. */
  readonly output: any;
  readonly nodes: string[];
  /** The failure code that starts `error` (out_of_fuel, invalid_input, …). */
  readonly errorCode: string | null;
  /** An inference result's output tensors. */
  tensors(): Record<string, Tensor>;
  /** This when completed; throws TaskFailedError when it ended otherwise. */
  raiseForStatus(): this;
}

/** Bytes, or the path of a file holding them. */
export type BytesOrPath = Uint8Array | ArrayBuffer | ArrayBufferView | string | URL;

export interface RequirementOptions {
  maxExecutionTimeSec?: number;
  requireGpu?: boolean;
  /** A UUID of your choosing; by default a fresh one is added. */
  taskId?: string;
}
export interface WasmOptions extends RequirementOptions { minNodes?: number }
export interface ComputationOptions extends RequirementOptions {
  minNodes?: number;
  /** One stdin value per shard. */
  shards?: unknown[];
  /** Or a range split evenly: each shard gets {end, shard, start}. */
  range?: { start: number; end: number; shards: number };
  reduce?: 'sum' | 'min' | 'max' | 'concat';
}
export interface InferenceOptions extends RequirementOptions {
  /** Send the model base64 inside the task instead of uploading it. */
  inline?: boolean;
  /** A model uploaded earlier. */
  modelSha256?: string;
}
export type ZkInputs =
  | { x: string | number | bigint; n: number }
  | { a: number[]; b: number[] };
export interface FederatedOptions {
  /** Clients per round, at least 2 (default 2). */
  minNodes?: number;
  maxExecutionTimeSec?: number;
  taskId?: string;
  model?: { type: 'logistic' } | { type: 'mlp'; hidden: number[] };
  rounds?: number;
  local?: { epochs: number; batch_size: number; lr: number; l2: number };
  server_lr?: number;
  epsilon?: number;
  delta?: number;
  clip_norm?: number;
  secure_aggregation?: boolean;
  round_timeout_sec?: number;
  eval_csv?: string;
  eval_label?: string;
  seed?: number;
}
export type TaskSubmission = Record<string, unknown> & { task_type: string };

export declare const bodies: Readonly<{
  withTaskId(body: TaskSubmission): TaskSubmission;
  wasm(module: BytesOrPath, inputs?: unknown, opts?: WasmOptions): Promise<TaskSubmission>;
  computation(kernel: BytesOrPath, opts: ComputationOptions): Promise<TaskSubmission>;
  inference(tensors: Record<string, TensorInput>,
    opts: RequirementOptions & { modelSha256?: string; modelBase64?: string }): TaskSubmission;
  zk(circuit: string, inputs: ZkInputs, opts?: Omit<RequirementOptions, 'requireGpu'>): TaskSubmission;
  federated(dataset: string, opts?: FederatedOptions): TaskSubmission;
}>;

/** The content of a connection.json written by `ambient up`. */
export interface Connection {
  api_url: string;
  api_key: string;
  submitter?: string;
  mqtt_host?: string;
  mqtt_port?: number;
  mqtt_username?: string;
  mqtt_password?: string;
  [key: string]: unknown;
}
export declare function loadConnection(path?: string): Promise<Connection>;

export interface WaitOptions {
  /** Give up after this long (the task goes on); none by default. */
  timeoutMs?: number;
  /** Called with the task whenever its status, reason or progress changes. */
  onProgress?: (info: TaskInfo) => void;
  /** REST waits only: stop polling when aborted. */
  signal?: AbortSignal;
}

export declare class Task {
  constructor(client: Client, id: string, submitted?: TaskInfo | null);
  client: Client;
  id: string;
  submitted: TaskInfo | null;
  info(): Promise<TaskInfo>;
  wait(opts?: WaitOptions): Promise<TaskInfo>;
  result(opts?: WaitOptions): Promise<any>;
  cancel(): Promise<TaskInfo>;
}

export interface ClientOptions {
  apiUrl: string;
  apiKey: string;
  /** Per HTTP request (default 30 000). */
  timeoutMs?: number;
  /** Extra tries of a request that got no answer or 503 (default 2). */
  retries?: number;
  /** First pause between polls of a waiting task (default 250). */
  pollIntervalMs?: number;
  /** Longest pause between polls (default 2 000). */
  maxPollIntervalMs?: number;
  connection?: Connection | null;
}

export interface Blob { sha256: string; size: number }

export declare class Client {
  constructor(options: ClientOptions);
  static fromConnection(path?: string, options?: Partial<ClientOptions>): Promise<Client>;
  readonly apiUrl: string;
  connection: Connection | null;
  submit(body: TaskSubmission): Promise<Task>;
  submitWasm(module: BytesOrPath, inputs?: unknown, opts?: WasmOptions): Promise<Task>;
  submitComputation(kernel: BytesOrPath, opts: ComputationOptions): Promise<Task>;
  submitInference(model: BytesOrPath | Blob | null, tensors: Record<string, TensorInput>,
    opts?: InferenceOptions): Promise<Task>;
  submitZk(circuit: string, inputs: ZkInputs, opts?: Omit<RequirementOptions, 'requireGpu'>): Promise<Task>;
  submitFederated(dataset: string, opts?: FederatedOptions): Promise<Task>;
  task(id: string): Task;
  info(id: string): Promise<TaskInfo>;
  tasks(opts?: { status?: TaskStatus; limit?: number }): Promise<TaskInfo[]>;
  cancel(id: string): Promise<TaskInfo>;
  wait(id: string, opts?: WaitOptions): Promise<TaskInfo>;
  uploadBlob(data: BytesOrPath): Promise<Blob>;
  proof(id: string): Promise<Record<string, any>>;
  verifyProof(args: { circuit: string; n: number; publicInputs: string[]; proof: string }): Promise<boolean>;
  /** The coordinator's task templates (GET /api/v1/templates). */
  templates(): Promise<Array<Record<string, any>>>;
  /** A template's task body with `params` set; submits nothing. */
  renderTemplate(name: string, params?: Record<string, unknown>): Promise<Record<string, any>>;
  /** Renders a template and submits it. */
  submitTemplate(name: string, params?: Record<string, unknown>): Promise<Task>;
  circuits(): Promise<Array<Record<string, any>>>;
  nodes(): Promise<Array<Record<string, any>>>;
  node(id: string): Promise<Record<string, any>>;
  reputation(id: string, opts?: { limit?: number }): Promise<Record<string, any>>;
  health(): Promise<Record<string, any>>;
  waitForNodes(count: number, opts?: { timeoutMs?: number }): Promise<Array<Record<string, any>>>;
  mqtt(options?: Partial<MqttOptions>): Promise<MqttClient>;
}

export declare function submitTopic(submitter: string): string;
export declare function submitterFilter(submitter: string): string;

export interface MqttOptions {
  host: string;
  port?: number;
  username: string;
  password?: string;
  /** The submitter id, when it differs from the username. */
  submitter?: string;
  /** Default: `${username}:${random}`. */
  clientId?: string;
  keepalive?: number;
  connectTimeoutMs?: number;
}

export declare class MqttTask {
  readonly id: string;
  /** The latest state published (null before the first); throws the rejection if refused. */
  info(): TaskInfo | null;
  wait(opts?: Omit<WaitOptions, 'signal'>): Promise<TaskInfo>;
  result(opts?: Omit<WaitOptions, 'signal'>): Promise<any>;
}

export declare class MqttClient {
  static connect(options: MqttOptions): Promise<MqttClient>;
  static fromConnection(connection: Connection, options?: Partial<MqttOptions>): Promise<MqttClient>;
  readonly submitter: string;
  /** Rejections that could not be matched to a submission (at most 100). */
  unattributedRejections: ApiError[];
  submit(body: TaskSubmission): Promise<MqttTask>;
  submitWasm(module: BytesOrPath, inputs?: unknown, opts?: WasmOptions): Promise<MqttTask>;
  submitComputation(kernel: BytesOrPath, opts: ComputationOptions): Promise<MqttTask>;
  submitInference(model: BytesOrPath, tensors: Record<string, TensorInput>,
    opts?: RequirementOptions): Promise<MqttTask>;
  submitZk(circuit: string, inputs: ZkInputs, opts?: Omit<RequirementOptions, 'requireGpu'>): Promise<MqttTask>;
  submitFederated(dataset: string, opts?: FederatedOptions): Promise<MqttTask>;
  close(): Promise<void>;
}
