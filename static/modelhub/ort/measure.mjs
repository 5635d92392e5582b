// How a variant is measured inside a JavaScript runtime (Node or the browser): the same warm-up
// rule, rounds and validation run as the native benchmark child (workers/evaluation/bench_child.py),
// so that the numbers of every target are read the same way. The runtime hands in its ort module.

import { fromTensor, rowsOf, toTensor } from "./tensors.mjs";

const WINDOW = 10; // calls per warm-up window
const STABLE_TOLERANCE = 0.03; // warm-up ends when the window median moves by no more than 3 %
const ROUND_WARMUP = 2; // untimed calls at the start of a round: another model ran just before

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** One loaded model: its session and its inputs per batch size. */
export class Measured {
  constructor(ort, session, feeds, options) {
    this.ort = ort;
    this.session = session;
    this.feeds = {};
    for (const [batch, inputs] of Object.entries(feeds)) {
      this.feeds[batch] = Object.fromEntries(Object.entries(inputs).map(([name, w]) => [name, toTensor(ort, w)]));
    }
    this.options = options;
  }

  async call(batch) {
    const start = performance.now();
    try {
      await this.session.run(this.feeds[batch]);
    } catch (error) {
      throw new Error(`The model failed at batch size ${batch}: ${error.message || error}`);
    }
    return performance.now() - start;
  }

  /** Call until the window median settles; [calls made, whether it settled]. */
  async warmUp(batch) {
    const { warmup_min: least, warmup_max: most, time_budget_s: budget } = this.options;
    const times = [];
    const deadline = performance.now() + budget * 1000;
    while (times.length < most) {
      times.push(await this.call(batch));
      if (times.length >= Math.max(least, 2 * WINDOW)) {
        const last = median(times.slice(-WINDOW));
        const before = median(times.slice(-2 * WINDOW, -WINDOW));
        if (Math.abs(last - before) <= STABLE_TOLERANCE * before) return [times.length, true];
      }
      if (times.length >= least && performance.now() > deadline) break;
    }
    return [times.length, false];
  }

  async warmUpAll() {
    const warmup = {};
    for (const batch of Object.keys(this.feeds)) warmup[batch] = await this.warmUp(batch);
    return warmup;
  }

  /** Untimed calls, then up to ``calls`` timed ones or until ``sliceS`` passes (at least one). */
  async round(batch, calls, sliceS) {
    for (let i = 0; i < ROUND_WARMUP; i += 1) await this.call(batch);
    const times = [await this.call(batch)];
    const deadline = performance.now() + sliceS * 1000;
    while (times.length < calls && performance.now() < deadline) times.push(await this.call(batch));
    return { times: times.map((t) => Math.round(t * 1e5) / 1e5) };
  }

  /** The model's outputs on ``inputs`` (wire tensors), ``step`` rows at a time, in the wire form. */
  async outputs(inputs, step) {
    const tensors = Object.fromEntries(Object.entries(inputs).map(([name, w]) => [name, toTensor(this.ort, w)]));
    const rows = Object.values(tensors)[0].dims[0];
    const chunks = [];
    for (let start = 0; start < rows; start += step) {
      const end = Math.min(start + step, rows);
      const feeds = Object.fromEntries(Object.entries(tensors).map(([n, t]) => [n, rowsOf(this.ort, t, start, end)]));
      chunks.push(await this.session.run(feeds));
    }
    return { outputs: this.session.outputNames.map((name) => joined(chunks.map((chunk) => chunk[name]))) };
  }
}

/** Tensors of one output, chunk after chunk, joined along the first axis (wire form). */
function joined(tensors) {
  const total = tensors.reduce((n, t) => n + t.data.length, 0);
  const data = new tensors[0].data.constructor(total);
  let offset = 0;
  for (const tensor of tensors) {
    data.set(tensor.data, offset);
    offset += tensor.data.length;
  }
  const rows = tensors.reduce((n, t) => n + Number(t.dims[0]), 0);
  return fromTensor({ type: tensors[0].type, dims: [rows, ...tensors[0].dims.slice(1)], data });
}

/** The error text of an exception from onnxruntime (it throws strings or Errors). */
export function errorText(error) {
  return (error && error.message) || String(error);
}
