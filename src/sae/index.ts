/** Sparse autoencoders: SAELens-format configs and weights, architectures, splicing, evaluation. */
export * from './config.js';
export * from './sae.js';
export * from './io.js';
export * from './splice.js';
export * from './eval.js';
export * from './attribution.js';
