// The Node part of a modelhub bundle: predict with onnxruntime-node (pinned in package.json).
//
//   cd node && npm ci && node predict.mjs [inputs.json]
//
// inputs.json: {"<input name>": {"data": [numbers], "dims": [..]}}; without it the model predicts
// once on zeros of its signature (symbolic dims taken as 1). Prints the outputs as JSON.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(HERE, "package.json"));
const ort = require("onnxruntime-node");
const config = JSON.parse(readFileSync(path.join(HERE, "..", "config.json"), "utf8"));

const ARRAYS = { float32: Float32Array, float64: Float64Array, float16: Uint16Array, int8: Int8Array, uint8: Uint8Array,
                 int32: Int32Array, int64: BigInt64Array, bool: Uint8Array };

/** A tensor of the input ``spec`` from plain numbers (zeros when none are given). */
function tensor(spec, given) {
  const dims = given?.dims ?? spec.shape.map((d) => (Number.isInteger(d) && d > 0 ? d : 1));
  const count = dims.reduce((a, b) => a * b, 1);
  const Kind = ARRAYS[spec.dtype];
  if (!Kind) throw new Error(`Input ${spec.name} has dtype ${spec.dtype}, which this script does not build.`);
  const values = given?.data ?? new Array(count).fill(0);
  const data = spec.dtype === "int64" ? Kind.from(values, (v) => BigInt(v)) : Kind.from(values);
  return new ort.Tensor(spec.dtype, data, dims);
}

const given = process.argv[2] ? JSON.parse(readFileSync(process.argv[2], "utf8")) : {};
const session = await ort.InferenceSession.create(path.join(HERE, "..", config.model_file || "model.onnx"),
  { intraOpNumThreads: config.session_options?.intra_op_threads || 1 });
const feeds = Object.fromEntries(config.signature.inputs.map((spec) => [spec.name, tensor(spec, given[spec.name])]));
const results = await session.run(feeds);
const outputs = Object.fromEntries(Object.entries(results).map(([name, t]) => [name, { dims: t.dims, data: Array.from(t.data, Number) }]));
process.stdout.write(JSON.stringify(outputs) + "\n");
