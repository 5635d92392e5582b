"""Where a variant will run: native ONNX Runtime (cpu, cuda) or a JavaScript runtime (node with
onnxruntime-node, browser-wasm with onnxruntime-web), and what each of them can run."""
