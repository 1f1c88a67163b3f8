/** A host-side float32 tensor as read from a checkpoint, row-major (PyTorch order). */
export interface RawTensor {
  shape: number[];
  data: Float32Array;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
