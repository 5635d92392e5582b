// The measuring page's side of the browser-wasm runner: the same requests as the Node runner
// (load, round, outputs, finish), answered inside the page on onnxruntime-web's wasm backend.

import { createSession, importOrt, usableThreads } from "./loader.mjs";
import { Measured, errorText } from "./measure.mjs";

const ORT_URL = "/ort/ort.wasm.min.mjs";
let model = null;
let baseline = null;
let threads = 1;

/** Memory as the browser reports it: the whole agent's bytes where the page is isolated
 *  (measureUserAgentSpecificMemory, wasm heap included), else the JS heap (performance.memory).
 *  With wasm threads the measurement never settles (their workers sit in Atomics.wait), so none
 *  is made: the runner then reads the renderer's own high-water mark (bytes null). */
async function memoryBytes(threads) {
  if (threads > 1) return { bytes: null, method: null };
  if (globalThis.crossOriginIsolated && performance.measureUserAgentSpecificMemory) {
    try {
      const timeout = new Promise((resolve) => setTimeout(() => resolve(null), 5000));
      const result = await Promise.race([performance.measureUserAgentSpecificMemory(), timeout]);
      if (result) return { bytes: result.bytes, method: "performance.measureUserAgentSpecificMemory()" };
    } catch (error) {
      console.warn(`measureUserAgentSpecificMemory failed: ${errorText(error)}`);
    }
  }
  const heap = performance.memory ? performance.memory.usedJSHeapSize : 0;
  return { bytes: heap, method: "performance.memory.usedJSHeapSize (JS heap only)" };
}

async function load(request) {
  threads = usableThreads(request.threads);
  baseline = await memoryBytes(threads);
  const ort = await importOrt(ORT_URL, request.threads);
  const start = performance.now();
  let session;
  try {
    session = await createSession(ort, request.model_url);
  } catch (error) {
    throw new Error(`onnxruntime-web (wasm) could not load the model: ${errorText(error)}`);
  }
  const loadMs = performance.now() - start;
  model = new Measured(ort, session, request.feeds, request);
  const notes = threads < request.threads ? [`The page is not cross-origin isolated; wasm ran on 1 thread, not ${request.threads}.`] : [];
  return {
    load_time_ms: loadMs, batches: Object.keys(request.feeds).map(Number).sort((a, b) => a - b), notes,
    warmup: await model.warmUpAll(),
    runtime: { runtime: "chromium", runtime_version: navigator.userAgent, ort_package: "onnxruntime-web",
               ort_version: ort.env.versions.web || ort.env.versions.common, backend: "wasm", simd: true,
               threads, isolated: Boolean(globalThis.crossOriginIsolated) },
  };
}

async function finish() {
  const peak = await memoryBytes(threads);
  if (peak.bytes === null || baseline.bytes === null) return { peak_memory_mb: null, baseline_memory_mb: null, memory_method: null };
  return { peak_memory_mb: Math.max(peak.bytes - baseline.bytes, 0) / 2 ** 20,
           baseline_memory_mb: baseline.bytes / 2 ** 20, memory_method: `${peak.method} after - before the session` };
}

/** One request of the runner; its answer ({ok} or {error}), never a thrown exception. */
async function handle(request) {
  try {
    if (request.op === "load") return { ok: await load(request) };
    if (!model) throw new Error(`The page got ${JSON.stringify(request.op)} before a model was loaded.`);
    if (request.op === "round") return { ok: await model.round(String(request.batch), request.calls, request.slice_s) };
    if (request.op === "outputs") return { ok: await model.outputs(request.inputs, request.step) };
    if (request.op === "finish") return { ok: await finish() };
    throw new Error(`Unknown request ${JSON.stringify(request.op)}.`);
  } catch (error) {
    return { error: errorText(error) };
  }
}

globalThis.modelhub = { handle };
document.getElementById("state").textContent = "ready";
