/**
 * A small builder for ONNX graphs on top of onnx-proto (protobufjs code generated from the
 * official onnx.proto): nodes, initializers, typed inputs/outputs, serialised to a ModelProto.
 * Opset 13 (ReduceMean's axes are an attribute, ReduceSum's an input), IR version 7.
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
type Attr = number | number[] | string;

export const OPSET = 13;
export const FLOAT = onnx.TensorProto.DataType.FLOAT;
export const INT64 = onnx.TensorProto.DataType.INT64;
/** Weight bytes serialised into one ModelProto (protobuf stops at 2 GiB); more go external. */
export const DEFAULT_MAX_EMBEDDED_BYTES = 1.5 * 2 ** 30;

function attribute(name: string, v: Attr): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
  return Number.isInteger(v) ? { name, type: T.INT, i: v } : { name, type: T.FLOAT, f: v };
}

/** A built graph: the ModelProto bytes, its input and output names, weights kept out of the bytes. */
export interface EmittedGraph {
  bytes: Uint8Array;
  inputs: string[];
  outputs: string[];
  /** Weights past maxEmbeddedBytes, as onnxruntime's `externalData` session option. */
  externalData: { path: string; data: Uint8Array }[];
}

/** Symbolic ('batch') or fixed sizes. */
type Dims = (number | string)[];

function valueInfo(name: string, elemType: number, dims?: Dims): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType, ...(dims ? { shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } : {}) } },
  };
}

export class GraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly constants = new Map<string, string>();
  private readonly external: { path: string; data: Uint8Array }[] = [];
  private counter = 0;

  private embeddedBytes = 0;

  /**
   * Weights go into the protobuf until `maxEmbeddedBytes`; the rest are handed to onnxruntime as
   * in-memory "external data files" (one per weight), which lifts protobuf's 2 GiB limit on a
   * message. Embedded is the default because it loads faster: measured on GPT-2-small blocks,
   * 55 ms a session embedded against 230 ms external (encoding included).
   */
  constructor(private readonly maxEmbeddedBytes = DEFAULT_MAX_EMBEDDED_BYTES) {}

  private fresh(prefix: string): string {
    return `${prefix}_${this.counter++}`;
  }

  input(name: string, elemType: number, dims: Dims): string {
    this.inputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  /** Expose `value` as graph output `name` (through an Identity, so names stay free). */
  output(name: string, value: string, elemType = FLOAT): void {
    this.nodes.push({ opType: 'Identity', input: [value], output: [name], name: `out_${name}` });
    this.outputs.push(valueInfo(name, elemType));
  }

  /** A float32 initializer (weights), stored as raw little-endian bytes. */
  weight(name: string, data: Float32Array, dims: number[]): string {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (this.embeddedBytes + bytes.byteLength > this.maxEmbeddedBytes) {
      const path = `w${this.external.length}.bin`;
      this.external.push({ path, data: bytes });
      const E = onnx.TensorProto.DataLocation.EXTERNAL;
      this.initializers.push({ name, dataType: FLOAT, dims, dataLocation: E, externalData: [{ key: 'location', value: path }, { key: 'offset', value: '0' }, { key: 'length', value: String(bytes.byteLength) }] });
    } else {
      this.initializers.push({ name, dataType: FLOAT, dims, rawData: bytes });
      this.embeddedBytes += bytes.byteLength;
    }
    return name;
  }

  /** A small constant (shared by value): float or int64. */
  constant(values: readonly number[], dims: number[], type: 'float' | 'int64' = 'float'): string {
    const key = `${type}:${dims.join('x')}:${values.join(',')}`;
    const hit = this.constants.get(key);
    if (hit) return hit;
    const name = this.fresh('c');
    if (type === 'float') this.initializers.push({ name, dataType: FLOAT, dims, floatData: [...values] });
    else this.initializers.push({ name, dataType: INT64, dims, int64Data: [...values] });
    this.constants.set(key, name);
    return name;
  }

  op(opType: string, inputs: string[], attrs: Record<string, Attr> = {}): string {
    const out = this.fresh(opType.toLowerCase());
    this.nodes.push({ opType, input: inputs, output: [out], name: out, attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)) });
    return out;
  }

  // Shorthands for the ops the models use.
  add = (a: string, b: string) => this.op('Add', [a, b]);
  sub = (a: string, b: string) => this.op('Sub', [a, b]);
  mul = (a: string, b: string) => this.op('Mul', [a, b]);
  div = (a: string, b: string) => this.op('Div', [a, b]);
  matMul = (a: string, b: string) => this.op('MatMul', [a, b]);
  reshape = (x: string, shape: number[]) => this.op('Reshape', [x, this.constant(shape, [shape.length], 'int64')]);
  transpose = (x: string, perm: number[]) => this.op('Transpose', [x], { perm });
  scalar = (v: number) => this.constant([v], []);

  /** The in-memory files of the weights kept out of the protobuf, for onnxruntime's `externalData` option. */
  externalData(): { path: string; data: Uint8Array }[] {
    return this.external;
  }

  toBytes(producer = 'hooklens'): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 7,
      producerName: producer,
      opsetImport: [{ domain: '', version: OPSET }],
      graph: { name: 'hooklens', node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}
