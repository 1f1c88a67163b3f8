/**
 * Circuit analysis on top of HookedModel / PatchingSession (TransformerLens / IOI-paper semantics;
 * heads are addressed as {layer, head}, graph node ids 'a{l}.h{h}', 'm{l}', 'input', 'logits'):
 *
 *  - head-scores:   previous-token / duplicate-token / induction pattern scores; head_out grids
 *  - copy-scores:   OV copy / negative copy scores (name movers, S-suppression heads)
 *  - node-scores:   whole-layer MLP node scores, head + MLP node lists
 *  - path-patching: Wang et al. path patching (sender → logits, or → receivers' q / k / v)
 *  - eap:           edge attribution patching (AtP or RelP gradients) and top edges
 *  - faithfulness:  mean ablation of heads and MLP layers, circuit faithfulness, ablateHeads
 *  - extract:       top-n / threshold / greedy circuits from node scores
 *  - roles:         IOI head roles (name movers, S-suppression, S-inhibition, induction, …)
 *  - graph:         CircuitGraph, JSON and hand-written layered SVG export
 *  - synthetic:     token-level IOI-shaped pairs for any vocabulary (smoke tests)
 */
export * from './common.js';
export * from './graph.js';
export * from './head-scores.js';
export * from './copy-scores.js';
export * from './node-scores.js';
export * from './path-patching.js';
export * from './eap.js';
export * from './faithfulness.js';
export * from './extract.js';
export * from './roles.js';
export * from './synthetic.js';
