#!/usr/bin/env python3
"""ezkl 23's proving pipeline on the zk fixtures, timed step by step (issue #17).

Run through scripts/bench-ezkl, which makes the venv. For each model this script starts a
worker process (this same file with --worker) in a fresh directory, watches its wall time and
resident memory, kills it when it passes --timeout or --max-rss-gb, and collects what it had
measured by then (the worker writes its figures after every step, so a model that runs out of
time during prove still reports its setup and key size).

The worker hands ezkl a copy of the model with the default strides/dilations/pads of Conv and
pooling nodes spelled out when they are absent (ezkl 23 rejects cnn.onnx's Conv otherwise: "a
node is missing required params: stride"); the onnxruntime cross-check runs that copy.

The worker, for <fixtures>/<name>.onnx with <name>.json = {"inputs": {"x": {"dtype", "shape",
"data"}}, "outputs": {"y": {...}}} (a fixed input and onnxruntime's output):
  gen_settings      input_visibility="public", output_visibility="public",
                    param_visibility="fixed" (ezkl 23's defaults too, set explicitly): the weights
                    are constants baked into the circuit and input and output are public
                    instances, the same split as our Groth16 circuits.
  calibrate_settings on the fixture input, target "resources" (ezkl's default: the smallest
                    circuit whose error it accepts); it chooses input/param scales and logrows.
  compile_circuit
  gen_srs           a test SRS for the settings' logrows, made here (no download). Not a
                    trusted setup, timed apart from setup.
  setup             the proving and verifying keys (pk, vk) from the compiled circuit + SRS.
  gen_witness       the quantized forward pass; its rescaled outputs are compared with
                    onnxruntime's output from the fixture (max abs error).
  prove             median of --repeat runs (one run only when the first takes over
                    --slow-prove-s seconds); each call reads the pk from disk, as ezkl's API does.
  verify            median of --repeat runs.
Sizes are bytes on disk for pk, vk, srs and the compiled circuit; the proof size is the raw
proof bytes (the proof JSON's "proof" byte list, the same bytes as its "hex_proof"), not the JSON
file, which also carries the instances and their pretty-printed values.

Output: a Markdown table and, as the last line, one JSON object keyed by model name (--json
prints only that line). Exit status 0 when every model finished and verified, 1 otherwise.
"""

import argparse
import asyncio
import inspect
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODELS = ["mlp_relu", "cnn", "mlp_tanh_softmax"]
PROGRESS = "progress.json"


# ----------------------------------------------------------------------------------- worker


def call(fn, *args, **kwargs):
    """Call an ezkl function, awaiting the result when this version made it async."""
    res = fn(*args, **kwargs)
    if inspect.isawaitable(res):
        async def wait():
            return await res
        res = asyncio.run(wait())
    return res


def worker(name, fixtures, work, repeat, slow_prove_s):
    import ezkl
    import numpy as np
    import onnx

    res = {"model": name, "ezkl_version": getattr(ezkl, "__version__", None), "status": "running",
           "step": None, "steps_s": {}}

    def save():
        tmp = os.path.join(work, PROGRESS + ".tmp")
        with open(tmp, "w") as f:
            json.dump(res, f)
        os.replace(tmp, os.path.join(work, PROGRESS))

    def timed(step, fn, *args, **kwargs):
        res["step"] = step
        save()
        t0 = time.perf_counter()
        out = call(fn, *args, **kwargs)
        dt = time.perf_counter() - t0
        print(f"[{name}] {step}: {dt:.3f} s -> {str(out)[:80]}", flush=True)
        return out, dt

    def size(path):
        return os.path.getsize(path) if os.path.exists(path) else None

    model_path = os.path.join(fixtures, name + ".onnx")
    fixture = json.load(open(os.path.join(fixtures, name + ".json")))
    p = lambda f: os.path.join(work, f)  # noqa: E731

    # ezkl's data file: {"input_data": [flat input 0, flat input 1, ...]} in graph input order.
    m = onnx.load(model_path)
    inits = {i.name for i in m.graph.initializer}
    in_names = [i.name for i in m.graph.input if i.name not in inits]
    out_names = [o.name for o in m.graph.output]
    missing = [n for n in in_names if n not in fixture["inputs"]]
    if missing:
        raise SystemExit(f"fixture {name}.json has no data for graph input(s) {missing}")
    data = {"input_data": [np.asarray(fixture["inputs"][n]["data"], dtype=np.float64).ravel().tolist()
                           for n in in_names]}
    json.dump(data, open(p("input.json"), "w"))
    ref_outputs = [np.asarray(fixture["outputs"][n]["data"], dtype=np.float64).ravel()
                   if n in fixture["outputs"] else None for n in out_names]

    # ezkl's ONNX reader (tract) refuses a Conv or pool whose strides are left to ONNX's default
    # ("a node is missing required params: stride"): hand it a copy with the defaults spelled out
    # (strides and dilations 1, pads 0 when auto_pad is NOTSET): the same model, which the
    # onnxruntime check below runs instead of the original.
    changes = []
    for node in m.graph.node:
        if node.op_type not in ("Conv", "MaxPool", "AveragePool"):
            continue
        attrs = {a.name: a for a in node.attribute}
        if "kernel_shape" in attrs:
            rank = len(attrs["kernel_shape"].ints)
        elif node.op_type == "Conv" and len(node.input) > 1:
            w = next((i for i in m.graph.initializer if i.name == node.input[1]), None)
            rank = len(w.dims) - 2 if w is not None else None
        else:
            rank = None
        if rank is None:
            continue
        auto_pad = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
        defaults = {"strides": [1] * rank}
        if node.op_type != "AveragePool":
            defaults["dilations"] = [1] * rank
        if auto_pad == "NOTSET":
            defaults["pads"] = [0] * (2 * rank)
        for key, val in defaults.items():
            if key not in attrs:
                node.attribute.append(onnx.helper.make_attribute(key, val))
                changes.append(f"{node.op_type} {node.name or node.output[0]}: {key}={val}")
    if changes:
        model_path = p(name + ".explicit.onnx")
        onnx.save(m, model_path)
    res["ezkl_model_changes"] = changes

    # Cross-check the fixture's output against onnxruntime here (same pins as the conformance run).
    try:
        import onnxruntime as ort
        sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        feeds = {n: np.asarray(fixture["inputs"][n]["data"], dtype=np.float32).reshape(fixture["inputs"][n]["shape"])
                 for n in in_names}
        got = sess.run(None, feeds)
        diffs = [float(np.max(np.abs(g.astype(np.float64).ravel() - r))) for g, r in zip(got, ref_outputs)
                 if r is not None]
        res["fixture_vs_onnxruntime_max_abs"] = max(diffs) if diffs else None
    except Exception as e:  # the comparison with the fixture's output still stands
        res["fixture_vs_onnxruntime_max_abs"] = f"not checked: {e}"

    run_args = ezkl.PyRunArgs()
    run_args.input_visibility = "public"
    run_args.output_visibility = "public"
    run_args.param_visibility = "fixed"
    _, res["steps_s"]["gen_settings"] = timed("gen_settings", ezkl.gen_settings, model_path, p("settings.json"),
                                              py_run_args=run_args)
    _, res["steps_s"]["calibrate"] = timed("calibrate_settings", ezkl.calibrate_settings, p("input.json"),
                                           model_path, p("settings.json"), "resources")
    _, res["steps_s"]["compile"] = timed("compile_circuit", ezkl.compile_circuit, model_path,
                                         p("network.ezkl"), p("settings.json"))
    settings = json.load(open(p("settings.json")))
    ra = settings["run_args"]
    res["settings"] = {
        "input_visibility": ra.get("input_visibility"),
        "output_visibility": ra.get("output_visibility"),
        "param_visibility": ra.get("param_visibility"),
        "input_scale": ra.get("input_scale"),
        "param_scale": ra.get("param_scale"),
        "scale_rebase_multiplier": ra.get("scale_rebase_multiplier"),
        "lookup_range": ra.get("lookup_range"),
        "logrows": ra.get("logrows"),
        "num_inner_cols": ra.get("num_inner_cols"),
        "num_rows": settings.get("num_rows"),
        "total_assignments": settings.get("total_assignments"),
        "required_lookups": settings.get("required_lookups"),
        "required_range_checks": settings.get("required_range_checks"),
        "check_mode": settings.get("check_mode"),
    }
    logrows = ra["logrows"]
    res["compiled_circuit_bytes"] = size(p("network.ezkl"))

    _, res["steps_s"]["gen_srs"] = timed("gen_srs", ezkl.gen_srs, p("kzg.srs"), logrows)
    res["srs_bytes"] = size(p("kzg.srs"))

    _, res["setup_s"] = timed("setup", ezkl.setup, p("network.ezkl"), p("vk.key"), p("pk.key"), p("kzg.srs"))
    res["steps_s"]["setup"] = res["setup_s"]
    res["pk_bytes"] = size(p("pk.key"))
    res["vk_bytes"] = size(p("vk.key"))
    save()

    _, res["steps_s"]["gen_witness"] = timed("gen_witness", ezkl.gen_witness, p("input.json"),
                                             p("network.ezkl"), p("witness.json"), p("vk.key"), p("kzg.srs"))
    # The dict gen_witness returns lacks the pretty-printed values; the file has them.
    witness = json.load(open(p("witness.json")))
    if "pretty_elements" in witness:
        rescaled = witness["pretty_elements"]["rescaled_outputs"]
    else:
        scales = settings["model_output_scales"]
        rescaled = [[ezkl.felt_to_float(v, sc) for v in o] for o, sc in zip(witness["outputs"], scales)]
    errs = []
    argmax_ok = []
    for got, ref in zip(rescaled, ref_outputs):
        if ref is None:
            continue
        got = np.asarray([float(v) for v in got], dtype=np.float64)
        if got.shape != ref.shape:
            raise SystemExit(f"ezkl output has {got.size} values, onnxruntime's {ref.size}")
        errs.append(float(np.max(np.abs(got - ref))))
        argmax_ok.append(bool(np.argmax(got) == np.argmax(ref)))
    res["output_max_abs_error"] = max(errs) if errs else None
    res["output_max_abs_ref"] = max(float(np.max(np.abs(r))) for r in ref_outputs if r is not None)
    res["argmax_matches"] = all(argmax_ok) if argmax_ok else None
    res["ezkl_output"] = [[float(v) for v in o] for o in rescaled]
    save()

    prove_times = []
    while len(prove_times) < repeat:
        _, dt = timed(f"prove #{len(prove_times) + 1}", ezkl.prove, p("witness.json"), p("network.ezkl"),
                      p("pk.key"), p("proof.json"), p("kzg.srs"))
        prove_times.append(dt)
        res["prove_runs_s"] = prove_times
        res["prove_s"] = statistics.median(prove_times)
        save()
        if dt > slow_prove_s:
            break
    proof = json.load(open(p("proof.json")))
    if isinstance(proof.get("proof"), list):
        res["proof_bytes"] = len(proof["proof"])
    else:
        hx = proof.get("hex_proof") or proof["proof"]
        res["proof_bytes"] = len(bytes.fromhex(hx[2:] if hx.startswith("0x") else hx))
    res["proof_json_bytes"] = size(p("proof.json"))
    res["public_instances"] = sum(len(i) for i in proof.get("instances", []))
    save()

    verify_times = []
    for i in range(repeat):
        ok, dt = timed(f"verify #{i + 1}", ezkl.verify, p("proof.json"), p("settings.json"), p("vk.key"),
                       p("kzg.srs"))
        if ok is not True:
            res["status"] = "verify returned " + repr(ok)
            save()
            return 1
        verify_times.append(dt)
    res["verify_runs_s"] = verify_times
    res["verify_s"] = statistics.median(verify_times)
    res["verified"] = True
    res["status"] = "ok"
    res["step"] = None
    save()
    return 0


# ----------------------------------------------------------------------------------- driver


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_model(args, name, log):
    work = tempfile.mkdtemp(prefix=f"bench-ezkl-{name}-")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--work", work,
           "--fixtures", args.fixtures, "--repeat", str(args.repeat), "--slow-prove-s", str(args.slow_prove_s)]
    logf = open(os.path.join(work, "log.txt"), "w")
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    proc_start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    peak = 0
    killed = None
    limit_kb = int(args.max_rss_gb * 1024 * 1024)
    rusage = None
    status = None
    while True:
        pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            status, rusage = st, ru
            break
        peak = max(peak, rss_kb(proc.pid))
        elapsed = time.monotonic() - t0
        if killed is None and elapsed > args.timeout:
            killed = f"timeout after {args.timeout:.0f} s"
        elif killed is None and peak > limit_kb:
            killed = f"killed at {peak / 1048576:.1f} GiB resident (--max-rss-gb {args.max_rss_gb:g})"
        if killed:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            pid, st, ru = os.wait4(proc.pid, 0)
            status, rusage = st, ru
            break
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - proc_start
    logf.close()
    try:
        res = json.load(open(os.path.join(work, PROGRESS)))
    except (OSError, ValueError):
        res = {"model": name, "status": "no result", "steps_s": {}}
    res["worker_wall_s"] = wall
    res["worker_cpu_s"] = (rusage.ru_utime + rusage.ru_stime) if rusage else None
    res["loadavg_1m_at_start"] = load0
    res["peak_rss_bytes"] = max(peak, rusage.ru_maxrss if rusage else 0) * 1024
    if killed:
        res["status"] = f"{killed}, during {res.get('step')}"
    elif proc.returncode != 0 and res.get("status") in ("running", "no result"):
        tail = open(os.path.join(work, "log.txt"), errors="replace").read().strip().splitlines()
        res["status"] = f"failed (exit {proc.returncode}) during {res.get('step')}: {(tail or [''])[-1][-300:]}"
        res["log_tail"] = tail[-20:]
    if args.keep:
        dest = os.path.join(args.keep, name)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(work, dest)
        res["kept"] = dest
    shutil.rmtree(work, ignore_errors=True)
    log(f"== {name}: {res['status']} ({wall:.1f} s, peak RSS {res['peak_rss_bytes'] / 1e9:.2f} GB)")
    return res


def fmt(v, spec, scale=1.0, none="–"):
    if v is None or isinstance(v, str):
        return none
    return format(v * scale, spec)


def table(results):
    rows = ["| model | logrows (rows used) | scales in/param | setup s | prove s (runs) | verify ms | "
            "pk MB | vk KB | proof B | max abs err vs ort (max abs out) | peak RSS GB | status |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        s = r.get("settings") or {}
        rows.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            name,
            f"{s['logrows']} ({s.get('num_rows')})" if s.get("logrows") else "–",
            f"{s['input_scale']}/{s['param_scale']}" if s.get("input_scale") is not None else "–",
            fmt(r.get("setup_s"), ".2f"),
            f"{r['prove_s']:.2f} ({len(r['prove_runs_s'])})" if r.get("prove_s") is not None else "–",
            fmt(r.get("verify_s"), ".1f", 1e3),
            fmt(r.get("pk_bytes"), ".1f", 1e-6),
            fmt(r.get("vk_bytes"), ".1f", 1e-3),
            fmt(r.get("proof_bytes"), ".0f"),
            (f"{r['output_max_abs_error']:.2e} ({r['output_max_abs_ref']:.3g})"
             if r.get("output_max_abs_error") is not None else "–"),
            fmt(r.get("peak_rss_bytes"), ".2f", 1e-9),
            r.get("status"),
        ))
    rows.append("")
    rows.append("| model | gen_settings s | calibrate s | compile s | gen_srs s (SRS MB) | gen_witness s | "
                "public instances | argmax matches | worker wall s (CPU s) | load avg at start |")
    rows.append("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        st = r.get("steps_s", {})
        rows.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            name, fmt(st.get("gen_settings"), ".2f"), fmt(st.get("calibrate"), ".2f"), fmt(st.get("compile"), ".2f"),
            (f"{st['gen_srs']:.2f} ({r['srs_bytes'] / 1e6:.1f})" if st.get("gen_srs") is not None else "–"),
            fmt(st.get("gen_witness"), ".3f"), r.get("public_instances", "–"), r.get("argmax_matches", "–"),
            (f"{r['worker_wall_s']:.1f} ({fmt(r.get('worker_cpu_s'), '.1f')})" if r.get("worker_wall_s") else "–"),
            fmt(r.get("loadavg_1m_at_start"), ".1f")))
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS),
                    help="comma-separated fixture names (default: %(default)s)")
    ap.add_argument("--fixtures", default=os.path.join(ROOT, "tests", "fixtures", "zk"))
    ap.add_argument("--repeat", type=int, default=3, help="prove and verify runs; the median is reported")
    ap.add_argument("--slow-prove-s", type=float, default=30.0,
                    help="stop repeating prove after a run longer than this (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=900.0, help="wall seconds per model (default %(default)s)")
    ap.add_argument("--max-rss-gb", type=float, default=12.0,
                    help="kill a model's worker past this resident memory, GiB (default %(default)s)")
    ap.add_argument("--keep", metavar="DIR", help="copy each model's work directory (keys, proof, logs) here")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.fixtures = os.path.abspath(args.fixtures)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    if args.worker:
        sys.exit(worker(args.worker, args.fixtures, args.work, args.repeat, args.slow_prove_s))

    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else \
        (lambda msg: print(msg, flush=True))
    if args.keep:
        args.keep = os.path.abspath(args.keep)
        os.makedirs(args.keep, exist_ok=True)
    results = {}
    for name in [m for m in args.models.split(",") if m]:
        missing = [f for f in (name + ".onnx", name + ".json") if not os.path.exists(os.path.join(args.fixtures, f))]
        if missing:
            results[name] = {"model": name, "status": f"missing fixture {', '.join(missing)} in {args.fixtures}",
                             "steps_s": {}}
            log(f"== {name}: {results[name]['status']}")
            continue
        log(f"== {name}: running ezkl (timeout {args.timeout:.0f} s, max RSS {args.max_rss_gb:g} GiB)")
        results[name] = run_model(args, name, log)
    if not args.json:
        print()
        print(f"ezkl pipeline, {os.cpu_count()} CPUs"
              + (f", RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']}" if "RAYON_NUM_THREADS" in os.environ else "")
              + f"; prove/verify: median of up to {args.repeat} runs")
        print()
        print(table(results))
        print()
    print(json.dumps(results, sort_keys=True))
    sys.exit(0 if all(r.get("status") == "ok" for r in results.values()) else 1)


if __name__ == "__main__":
    main()
