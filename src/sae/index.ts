/**
 * Sparse autoencoders: SAELens-format configs and weights, architectures, splicing, evaluation,
 * training from Arrow activation streams, feature statistics (SQLite store), dashboards, and
 * attribution to latents.
 */
export * from './config.js';
export * from './sae.js';
export * from './io.js';
export * from './splice.js';
export * from './eval.js';
export * from './attribution.js';
export * from './activation-stream.js';
export * from './train.js';
export * from './feature-stats.js';
export * from './feature-store.js';
export * from './dashboard.js';
