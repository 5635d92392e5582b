// modelhub's measuring child for the `node` target: one variant in onnxruntime-node, one JSON
// request per line on stdin, one answer per line on stdout ({"ok": ...} or {"error": "..."}),
// the same protocol as the native child (workers/evaluation/bench_child.py) plus `outputs`:
//   load    {model, feeds: {batch: {input: tensor}}, threads, warmup_min, warmup_max, time_budget_s}
//   round   {batch, calls, slice_s}            -> {times}
//   outputs {inputs: {input: tensor}, step}    -> {outputs: [tensor]}   (the validation set)
//   finish                                     -> peak memory, then exit
// onnxruntime-node comes from the project's node_modules (NODE_PATH is not needed: the module is
// resolved from the checkout's package.json). Whatever else is printed goes to stderr.

import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import path from "node:path";

import { Measured, errorText } from "../../../static/modelhub/ort/measure.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const require = createRequire(path.join(ROOT, "package.json"));
const answer = process.stdout.write.bind(process.stdout);
console.log = console.error; // nothing but answers on stdout
const ort = require("onnxruntime-node");
ort.env.logLevel = "error";

let model = null;
let baselineKb = 0;

async function load(request) {
  baselineKb = process.memoryUsage().rss / 1024;
  const start = performance.now();
  let session;
  try {
    session = await ort.InferenceSession.create(request.model, {
      executionProviders: ["cpu"], intraOpNumThreads: request.threads, interOpNumThreads: 1,
      graphOptimizationLevel: "all", executionMode: "sequential",
    });
  } catch (error) {
    throw new Error(`onnxruntime-node could not load the model: ${errorText(error)}`);
  }
  const loadMs = performance.now() - start;
  model = new Measured(ort, session, request.feeds, request);
  return {
    load_time_ms: loadMs, batches: Object.keys(request.feeds).map(Number).sort((a, b) => a - b), notes: [],
    warmup: await model.warmUpAll(),
    runtime: { runtime: "node", runtime_version: process.versions.node, ort_package: "onnxruntime-node",
               ort_version: ort.env.versions.node || ort.env.versions.common, backend: "cpu",
               threads: request.threads, isolated: null },
  };
}

function finish() {
  const peakKb = process.resourceUsage().maxRSS;
  return { peak_memory_mb: Math.max(peakKb - baselineKb, 0) / 1024, baseline_memory_mb: baselineKb / 1024,
           memory_method: "node resourceUsage().maxRSS - memoryUsage().rss before the session" };
}

async function handle(request) {
  if (request.op === "load") return load(request);
  if (!model) throw new Error(`The node runner got ${JSON.stringify(request.op)} before a model was loaded.`);
  if (request.op === "round") return model.round(String(request.batch), request.calls, request.slice_s);
  if (request.op === "outputs") return model.outputs(request.inputs, request.step);
  if (request.op === "finish") return finish();
  throw new Error(`Unknown request ${JSON.stringify(request.op)}.`);
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  let request = {};
  let reply;
  try {
    request = JSON.parse(line);
    reply = { ok: await handle(request) };
  } catch (error) {
    reply = { error: errorText(error) };
  }
  answer(JSON.stringify(reply) + "\n");
  if (reply.error || request.op === "finish") break;
}
process.exit(0);
