// Tensors on the wire between modelhub's Python side and a JavaScript runtime: {dtype, dims, b64},
// the bytes little-endian as numpy writes them. The same file serves the browser and Node
// (atob / btoa exist in both), so both targets read and write tensors one way.

const ARRAYS = {
  float32: Float32Array, float64: Float64Array, float16: Uint16Array, int8: Int8Array, uint8: Uint8Array,
  int16: Int16Array, uint16: Uint16Array, int32: Int32Array, uint32: Uint32Array, int64: BigInt64Array,
  uint64: BigUint64Array, bool: Uint8Array,
};

/** The bytes of a base64 string. */
export function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** The base64 string of some bytes (in chunks: String.fromCharCode takes a bounded argument list). */
export function toBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** The typed-array class that holds a tensor of ``dtype``. */
export function arrayType(dtype) {
  const Kind = ARRAYS[dtype];
  if (!Kind) throw new Error(`The tensor type ${dtype} is not supported by this loader.`);
  return Kind;
}

/** A typed array of ``dtype`` over a fresh copy of ``bytes`` (fresh, so it is aligned). */
export function typedArray(dtype, bytes) {
  const Kind = arrayType(dtype);
  const copy = new Uint8Array(bytes);
  return new Kind(copy.buffer, 0, copy.byteLength / Kind.BYTES_PER_ELEMENT);
}

/** An onnxruntime Tensor from its wire form. */
export function toTensor(ort, wire) {
  return new ort.Tensor(wire.dtype, typedArray(wire.dtype, fromBase64(wire.b64)), wire.dims);
}

/** The wire form of an onnxruntime Tensor (or of any {type, dims, data}). */
export function fromTensor(tensor) {
  const data = tensor.data;
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { dtype: tensor.type, dims: Array.from(tensor.dims, Number), b64: toBase64(bytes) };
}

/** Rows ``start``..``end`` of a tensor's wire form, along its first axis, as a Tensor. */
export function rowsOf(ort, tensor, start, end) {
  const rowSize = tensor.dims.slice(1).reduce((a, b) => a * b, 1);
  const data = tensor.data.subarray(start * rowSize, end * rowSize);
  return new ort.Tensor(tensor.type, data, [end - start, ...tensor.dims.slice(1)]);
}
