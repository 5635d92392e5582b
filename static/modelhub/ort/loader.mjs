// modelhub's ES-module loader for onnxruntime-web (wasm backend, SIMD): one way to make a session
// in a page, shared by the product's measuring page (bench.html) and the browser bundle.
//
//   import { loadBundle } from "./loader.mjs";
//   const model = await loadBundle();                  // reads ./config.json beside this file
//   const outputs = await model.predict({ input: { data: [...], dims: [1, 4] } });
//
// Threads: more than one needs a cross-origin-isolated page (COOP: same-origin and COEP:
// require-corp), since the wasm threads share memory; elsewhere one thread is used, and said so.

import { arrayType, fromTensor } from "./tensors.mjs";

/** The threads onnxruntime-web may use here: ``wanted``, or 1 where the page is not isolated. */
export function usableThreads(wanted) {
  return globalThis.crossOriginIsolated ? Math.max(1, wanted) : 1;
}

/** Import onnxruntime-web's wasm build from ``ortUrl`` and point it at its own wasm files. */
export async function importOrt(ortUrl, threads) {
  const ort = await import(ortUrl);
  ort.env.wasm.wasmPaths = new URL("./", new URL(ortUrl, globalThis.location.href)).href;
  ort.env.wasm.numThreads = usableThreads(threads);
  ort.env.wasm.simd = true;
  ort.env.logLevel = "error";
  return ort;
}

/** A wasm session of the model at ``modelUrl`` (a failure keeps onnxruntime-web's own words). */
export async function createSession(ort, modelUrl) {
  const response = await fetch(modelUrl);
  if (!response.ok) throw new Error(`The model could not be fetched from ${modelUrl}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  return ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
}

/** Run ``inputs`` ({name: Tensor | {data, dims, dtype?}}) and answer {name: {dtype, dims, data}}. */
export async function predict(ort, session, inputs, dtypes = {}) {
  const feeds = {};
  for (const [name, value] of Object.entries(inputs)) {
    if (value instanceof ort.Tensor) {
      feeds[name] = value;
      continue;
    }
    const dtype = value.dtype || dtypes[name] || "float32";
    const data = ArrayBuffer.isView(value.data) ? value.data : asTyped(dtype, value.data);
    feeds[name] = new ort.Tensor(dtype, data, value.dims);
  }
  const results = await session.run(feeds);
  const answer = {};
  for (const [name, tensor] of Object.entries(results)) {
    answer[name] = { dtype: tensor.type, dims: Array.from(tensor.dims, Number), data: Array.from(tensor.data, Number) };
  }
  return answer;
}

/** Plain numbers as the typed array of ``dtype`` (64-bit integers as BigInts). */
function asTyped(dtype, values) {
  const Kind = arrayType(dtype);
  return dtype === "int64" || dtype === "uint64" ? Kind.from(values, (v) => BigInt(v)) : Kind.from(values);
}

/** The bundle beside this file: config.json, the model it names, and a predict bound to both. */
export async function loadBundle({ base = import.meta.url, threads } = {}) {
  const config = await (await fetch(new URL("config.json", base))).json();
  const ort = await importOrt(new URL(config.ort || "ort/ort.wasm.min.mjs", base).href, threads ?? config.threads ?? 1);
  const session = await createSession(ort, new URL(config.model_file || "model.onnx", base).href);
  const dtypes = Object.fromEntries((config.signature?.inputs || []).map((spec) => [spec.name, spec.dtype]));
  return { ort, session, config, predict: (inputs) => predict(ort, session, inputs, dtypes), wire: fromTensor };
}

/** Inputs of zeros for a signature ({inputs: [{name, dtype, shape}]}), symbolic dims taken as 1. */
export function zeros(signature) {
  const inputs = {};
  for (const spec of signature.inputs) {
    const dims = spec.shape.map((d) => (Number.isInteger(d) && d > 0 ? d : 1));
    const count = dims.reduce((a, b) => a * b, 1);
    inputs[spec.name] = { dtype: spec.dtype, dims, data: new (arrayType(spec.dtype))(count) };
  }
  return inputs;
}
