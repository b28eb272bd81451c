#!/usr/bin/env python3
"""ONNX's backend node test cases through our `inference` task path, beside onnxruntime.

Run by scripts/onnx-conformance, which makes the virtual environment (onnx, onnxruntime, numpy,
pinned) and passes the `ambient` binary; see `--help` for the flags.

Cases: every case of `onnx.backend.test.case.node.collect_testcases()` (the cases behind
onnx/backend/test/data/node/*: a model and its inputs and expected outputs) whose graph inputs
(less initializers) and graph outputs are all float32 tensors, and whose data set holds float32
arrays only. Each case is run

  1. on onnxruntime (CPU), to get the set of cases a mature runtime passes;
  2. as an `inference` task on a real local network (`ambient up` on free loopback ports, with
     its own agents): the model inline (`model_base64`), the tensors as JSON, submitted over
     REST with a bounded pool of concurrent submitters, and waited for.

Both are judged as onnx's own backend test runner judges: same output names, float32, same shape,
and `numpy.testing.assert_allclose` with the case's rtol and atol (1e-3 and 1e-7 unless the case
says otherwise; NaN equals NaN). Our outcome is one of

  correct    completed, and every output matches;
  close      completed, and every output matches but for differences within float32 rounding
             at the tensor's scale (|Δ| <= rtol·|want| + 1e-5·max(1, max|want|)): counted as
             answered (float32 cannot do better), and listed;
  refused    refused at submission (4xx with a code) or failed with a typed error (its code and
             message are recorded);
  wrong      completed without an error, but an output differs, is missing or has another
             shape: the worst outcome, an answer that looks right;
  no_answer  not finished in time (expired, or still running at --timeout).

The script prints a summary, writes a JSON report (--report), and exits non-zero when any case is
wrong or unanswered, or when we answer (correct or close) fewer than --min-coverage percent of
the cases onnxruntime passes.
"""

from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures as cf
import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import warnings

import numpy as np

warnings.filterwarnings("ignore")

import onnx  # noqa: E402
import onnx.backend.test.case.node as node_cases  # noqa: E402
from onnx import TensorProto, numpy_helper  # noqa: E402

TERMINAL = {"completed", "failed", "expired", "cancelled"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True, help="the `ambient` binary (runs `ambient up`)")
    p.add_argument("--agents", type=int, default=2, help="agents in the local network (default 2)")
    p.add_argument("--jobs", type=int, default=6, help="tasks in flight at once (default 6)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one task (default 120)")
    p.add_argument(
        "--min-coverage",
        type=float,
        default=85.0,
        help="least percentage of onnxruntime's passing cases we must answer correctly (default 85)",
    )
    p.add_argument("--only", help="a regular expression: run only the cases whose name it finds")
    p.add_argument("--report", default="target/onnx-conformance.json", help="where to write the JSON report")
    p.add_argument("--export", help="also write the kept cases to this directory in onnx's layout")
    p.add_argument("--list", action="store_true", help="print every case's outcome, not only the failures")
    return p.parse_args()


# ---------------------------------------------------------------------------------------------
# The cases


def is_float32(vi: onnx.ValueInfoProto) -> bool:
    t = vi.type
    return t.HasField("tensor_type") and t.tensor_type.elem_type == TensorProto.FLOAT


def float32_cases(only: str | None) -> list[dict]:
    kept = []
    for case in node_cases.collect_testcases(None):
        g = case.model.graph
        inits = {i.name for i in g.initializer}
        inputs = [i for i in g.input if i.name not in inits]
        if not (all(is_float32(i) for i in inputs) and all(is_float32(o) for o in g.output)):
            continue
        if len(case.data_sets) != 1:
            continue
        ins, outs = case.data_sets[0]
        arrays = list(ins) + list(outs)
        if not all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays):
            continue
        if only and not re.search(only, case.name):
            continue
        kept.append(
            {
                "name": case.name,
                "model": case.model.SerializeToString(),
                "proto": case.model,
                "input_names": [i.name for i in inputs],
                "inputs": list(ins),
                "output_names": [o.name for o in g.output],
                "outputs": list(outs),
                "rtol": case.rtol,
                "atol": case.atol,
            }
        )
    return kept


def export(cases: list[dict], root: str) -> None:
    for c in cases:
        d = os.path.join(root, c["name"])
        ds = os.path.join(d, "test_data_set_0")
        os.makedirs(ds, exist_ok=True)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(c["model"])
        for j, (n, a) in enumerate(zip(c["input_names"], c["inputs"])):
            with open(os.path.join(ds, f"input_{j}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(a, n).SerializeToString())
        for j, (n, a) in enumerate(zip(c["output_names"], c["outputs"])):
            with open(os.path.join(ds, f"output_{j}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(a, n).SerializeToString())


def float32_atol(want: np.ndarray) -> float:
    """The rounding error float32 arithmetic makes on values of `want`'s scale.

    onnx's default atol (1e-7) is below float32's resolution for any tensor whose values reach
    1: a DFT whose outputs reach 500 and whose near-zero entries come out as 1.5e-5 instead of
    numpy's float64 7e-15 is right to float32 precision (onnxruntime misses those by 3e-4).
    """
    finite = np.abs(want[np.isfinite(want)])
    scale = float(finite.max()) if finite.size else 0.0
    return 1e-5 * max(1.0, scale)


def compare(c: dict, got: list[np.ndarray]) -> tuple[str, str | None]:
    """("ok", None) when `got` matches the case's expected outputs as onnx's runner checks them
    (same dtype and shape, allclose with the case's rtol and atol); ("close", why) when it
    misses that only within float32 rounding at the tensor's scale ([`float32_atol`]);
    ("differs", why) otherwise."""
    if len(got) != len(c["outputs"]):
        return "differs", f"{len(got)} outputs, expected {len(c['outputs'])}"
    verdict, notes = "ok", []
    for name, want, have in zip(c["output_names"], c["outputs"], got):
        if have.dtype != want.dtype:
            return "differs", f"{name}: dtype {have.dtype}, expected {want.dtype}"
        if have.shape != want.shape:
            return "differs", f"{name}: shape {list(have.shape)}, expected {list(want.shape)}"
        if np.allclose(have, want, rtol=c["rtol"], atol=c["atol"], equal_nan=True):
            continue
        with np.errstate(invalid="ignore"):
            diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
        worst = float(np.nanmax(diff)) if diff.size and not np.all(np.isnan(diff)) else float("nan")
        bad = int(np.sum(~np.isclose(have, want, rtol=c["rtol"], atol=c["atol"], equal_nan=True)))
        note = f"{name}: {bad} of {want.size} values differ (max |Δ| {worst:.3g})"
        if np.allclose(have, want, rtol=c["rtol"], atol=max(c["atol"], float32_atol(want)), equal_nan=True):
            verdict = "close"
            notes.append(note + f", within float32 rounding ({float32_atol(want):.1g})")
        else:
            return "differs", note
    return verdict, "; ".join(notes) or None


# ---------------------------------------------------------------------------------------------
# onnxruntime


def run_onnxruntime(cases: list[dict]) -> None:
    # onnx's newest cases are stamped with opsets onnxruntime calls "under development" and
    # refuses unless told otherwise; with this it runs them (and still refuses what it lacks).
    os.environ.setdefault("ALLOW_RELEASED_ONNX_OPSET_ONLY", "0")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.intra_op_num_threads = 1
    for c in cases:
        try:
            sess = ort.InferenceSession(c["model"], opts, providers=["CPUExecutionProvider"])
            feed = dict(zip(c["input_names"], c["inputs"]))
            got = sess.run(c["output_names"], feed)
            verdict, why = compare(c, [np.asarray(g) for g in got])
            c["ort"] = "pass" if verdict == "ok" else "fail"
            c["ort_detail"] = why
        except Exception as e:  # noqa: BLE001 - any failure of the reference runtime is a fail
            c["ort"] = "error"
            c["ort_detail"] = str(e).splitlines()[0][:300] if str(e) else type(e).__name__


# ---------------------------------------------------------------------------------------------
# The local network


class Network:
    def __init__(self, binary: str, agents: int):
        self.dir = tempfile.mkdtemp(prefix="onnx-conformance-")
        self.log = open(os.path.join(self.dir, "up.log"), "wb")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        self.proc = subprocess.Popen(
            [
                binary,
                "up",
                "--data-dir",
                os.path.join(self.dir, "data"),
                "--agents",
                str(agents),
                "--http-addr",
                "127.0.0.1:0",
                "--mqtt-addr",
                "127.0.0.1:0",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        conn_path = os.path.join(self.dir, "data", "connection.json")
        deadline = time.time() + 120
        conn = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"ambient up exited early:\n{self.tail()}")
            try:
                with open(conn_path) as f:
                    conn = json.load(f)
                break
            except (OSError, ValueError):
                time.sleep(0.2)
        if conn is None:
            self.stop()
            raise SystemExit(f"ambient up wrote no {conn_path} in 120 s:\n{self.tail()}")
        url = urllib.parse.urlparse(conn["api_url"])
        if url.hostname != "127.0.0.1":
            self.stop()
            raise SystemExit(f"not a loopback API: {conn['api_url']}")
        self.host, self.port, self.key = url.hostname, url.port, conn["api_key"]
        # Wait until every agent has reported its health, so the first tasks are not refused.
        while time.time() < deadline:
            status, nodes = self.request("GET", "/api/v1/nodes")
            if status == 200 and len(nodes) >= agents:
                return
            time.sleep(0.3)
        self.stop()
        raise SystemExit(f"{agents} agents did not come up in 120 s:\n{self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        with open(os.path.join(self.dir, "up.log"), "rb") as f:
            return b"\n".join(f.read().splitlines()[-40:]).decode(errors="replace")

    def request(self, method: str, path: str, body: bytes | None = None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            headers = {"Authorization": f"Bearer {self.key}"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            try:
                return r.status, json.loads(data)
            except ValueError:
                return r.status, {"error": "non_json", "message": data[:300].decode(errors="replace")}
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def tensor_json(a: np.ndarray) -> dict:
    """A float32 tensor as the API takes it: JSON numbers, with NaN and ±inf by their names."""
    data = [v if math.isfinite(v) else NON_FINITE[repr(v)]
            for v in a.astype(np.float64).ravel().tolist()]
    return {"dtype": "float32", "shape": list(a.shape), "data": data}


def run_ours(net: Network, c: dict, timeout: float) -> None:
    body = {
        "task_type": "inference",
        "inputs": {
            "model_base64": base64.b64encode(c["model"]).decode(),
            "tensors": {n: tensor_json(a) for n, a in zip(c["input_names"], c["inputs"])},
        },
        "requirements": {"min_nodes": 1, "max_execution_time_sec": 60},
    }
    started = time.time()
    status, info = net.request("POST", "/api/v1/tasks", json.dumps(body, allow_nan=False).encode())
    if status != 201:
        c["ours"] = "refused"
        c["stage"] = "submit"
        c["code"] = info.get("error", f"http_{status}")
        c["message"] = info.get("message", "")
        return
    task = info["task_id"]
    while info.get("status") not in TERMINAL and time.time() - started < timeout:
        time.sleep(0.05 if time.time() - started < 1 else 0.2)
        status, got = net.request("GET", f"/api/v1/tasks/{task}")
        if status == 200:
            info = got
    c["ms"] = int((time.time() - started) * 1000)
    c["task_id"] = task
    st = info.get("status")
    if st == "completed":
        outputs = info["result"]["output"]["outputs"]
        got = []
        for name, want in zip(c["output_names"], c["outputs"]):
            t = outputs.get(name)
            if t is None:
                c["ours"] = "wrong"
                c["detail"] = f"no output {name!r}; the result has {sorted(outputs)}"
                return
            # NaN and ±inf come as "NaN", "Infinity", "-Infinity", which numpy reads; anything
            # else that is not a number (a null, say) makes the answer wrong.
            try:
                dt = np.float32 if t["dtype"] == "float32" else np.dtype(t["dtype"])
                have = np.array(t["data"], dtype=np.float64).astype(dt).reshape(t["shape"])
            except (TypeError, ValueError) as e:
                c["ours"] = "wrong"
                c["detail"] = f"output {name!r} does not read as numbers: {e}"
                return
            got.append(have)
        verdict, why = compare(c, got)
        c["ours"] = {"ok": "correct", "close": "close", "differs": "wrong"}[verdict]
        c["detail"] = why
    elif st == "failed":
        err = info.get("error") or ""
        code, _, message = err.partition(":")
        c["ours"] = "refused"
        c["stage"] = "task"
        c["code"] = code.strip() or "failed"
        c["message"] = message.strip()
    else:
        if st not in TERMINAL:
            net.request("DELETE", f"/api/v1/tasks/{task}")
        c["ours"] = "no_answer"
        c["detail"] = f"status {st} after {time.time() - started:.0f} s"


# ---------------------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    t0 = time.time()
    cases = float32_cases(args.only)
    if not cases:
        print("no case matches", file=sys.stderr)
        return 2
    if args.export:
        export(cases, args.export)
    run_onnxruntime(cases)
    t_ort = time.time() - t0
    print(f"== {len(cases)} float32 cases; onnxruntime passes {sum(c['ort'] == 'pass' for c in cases)} ({t_ort:.0f} s)")

    net = Network(args.bin, args.agents)
    try:
        t1 = time.time()
        with cf.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(run_ours, net, c, args.timeout): c for c in cases}
            for f in cf.as_completed(futures):
                c = futures[f]
                try:
                    f.result()
                except Exception as e:  # noqa: BLE001 - a broken request is reported, not fatal
                    c["ours"] = "no_answer"
                    c["detail"] = f"driver error: {e}"
        t_ours = time.time() - t1
    finally:
        log_tail = net.tail()
        net.stop()

    counts = collections.Counter(c["ours"] for c in cases)
    ort_pass = [c for c in cases if c["ort"] == "pass"]
    covered = sum(c["ours"] in ("correct", "close") for c in ort_pass)
    coverage = 100.0 * covered / max(len(ort_pass), 1)

    for c in sorted(cases, key=lambda c: c["name"]):
        if c["ours"] == "correct" and not args.list:
            continue
        what = c.get("detail") or f"{c.get('code')}: {c.get('message', '')}"
        print(f"{c['ours']:9} {c['name']:60} ort={c['ort']:5} {what[:200]}")

    refusals = collections.Counter(c.get("code") for c in cases if c["ours"] == "refused")
    print()
    print(f"== cases: {len(cases)} float32 node cases of onnx {onnx.__version__}")
    print(f"== onnxruntime: {len(ort_pass)} pass")
    print(
        f"== ours: {counts['correct']} correct, {counts['close']} close (float32 rounding), "
        f"{counts['refused']} refused, {counts['wrong']} WRONG, "
        f"{counts['no_answer']} no answer"
    )
    print(f"== refusals by code: {dict(refusals.most_common())}")
    print(
        f"== coverage: {covered} of onnxruntime's {len(ort_pass)} passes answered (correct or close) = "
        f"{coverage:.1f} % (need {args.min_coverage:.1f} %)"
    )
    print(f"== time: onnxruntime {t_ort:.0f} s, network {t_ours:.0f} s, total {time.time() - t0:.0f} s")

    report = {
        "onnx": onnx.__version__,
        "summary": {
            "cases": len(cases),
            "onnxruntime_pass": len(ort_pass),
            "correct": counts["correct"],
            "close": counts["close"],
            "refused": counts["refused"],
            "wrong": counts["wrong"],
            "no_answer": counts["no_answer"],
            "covered": covered,
            "coverage_pct": round(coverage, 2),
            "min_coverage_pct": args.min_coverage,
            "seconds": round(time.time() - t0, 1),
        },
        "cases": [
            {k: v for k, v in c.items() if k not in ("model", "proto", "inputs", "outputs")}
            for c in sorted(cases, key=lambda c: c["name"])
        ],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
    with open(args.report, "w") as f:
        json.dump(report, f, indent=1)
    print(f"== report: {args.report}")

    failed = False
    if counts["wrong"]:
        print(f"FAIL: {counts['wrong']} wrong answers without an error")
        failed = True
    if counts["no_answer"]:
        print(f"FAIL: {counts['no_answer']} cases without an answer")
        print(log_tail)
        failed = True
    if coverage < args.min_coverage:
        print(f"FAIL: coverage {coverage:.1f} % is under {args.min_coverage:.1f} %")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
