/** `--steer probe.json --alpha A` / `--ablate-direction probe.json`: probe directions as forward hooks. */
import { fail } from '../errors.js';
import type { FwdHook, HookedModel } from '../hooks/hooked-model.js';
import { readProbe } from '../probing/probe-file.js';
import { ablationEdit, editHook, steeringEdit, type DirectionEdit, type EditPositions } from '../probing/steer.js';

export const STEER_OPTIONS = {
  steer: { type: 'string' },
  alpha: { type: 'string' },
  'steer-class': { type: 'string' },
  'ablate-direction': { type: 'string' },
  'probe-hook': { type: 'string' },
  'steer-position': { type: 'string' },
} as const;

export const STEER_USAGE = `  --steer PROBE.json   add α·û at the probe's hook (û: unit direction towards --steer-class;
                       binary probes default to their second class)
  --alpha A            steering strength in activation units (required with --steer)
  --steer-class C      class to steer towards (needed for probes with 3+ classes)
  --ablate-direction PROBE.json
                       project the probe's weight directions out of its hook's activation
  --probe-hook NAME    which probe of a per-hook probe file (from a hook pattern)
  --steer-position P   all (default) or one position index (negative counts from the end;
                       write --steer-position=-1)`;

type SteerValues = { [K in keyof typeof STEER_OPTIONS]?: string };

/** The probe interventions asked for, as data (onnx graph inputs) — see steerHooks for tfjs. */
export function steerEdits(model: HookedModel, values: SteerValues): DirectionEdit[] {
  const edits: DirectionEdit[] = [];
  const posArg = values['steer-position'];
  let positions: EditPositions = 'all';
  if (posArg !== undefined) {
    if (posArg !== 'all' && !/^-?\d+$/.test(posArg)) fail(`--steer-position must be all or an integer, got '${posArg}'`);
    positions = posArg === 'all' ? 'all' : Number(posArg);
  }
  const check = (hook: string, file: string) => {
    if (!model.hookNames().includes(hook)) fail(`${file}: the probe's hook ${hook} is not a hook of ${model.source}`);
  };
  if (values.steer !== undefined) {
    if (values.alpha === undefined) fail('--steer needs --alpha');
    const alpha = Number(values.alpha);
    if (values.alpha.trim() === '' || !Number.isFinite(alpha)) fail(`--alpha must be a number, got '${values.alpha}'`);
    const probe = readProbe(values.steer, values['probe-hook']);
    check(probe.hook, values.steer);
    const cls = values['steer-class'];
    const classValue = cls !== undefined && probe.classes && typeof probe.classes[0] === 'number' ? Number(cls) : cls;
    edits.push(steeringEdit(probe, alpha, { ...(classValue !== undefined ? { cls: classValue } : {}), positions }));
  } else if (values.alpha !== undefined || values['steer-class'] !== undefined) fail('--alpha and --steer-class need --steer');
  if (values['ablate-direction'] !== undefined) {
    const probe = readProbe(values['ablate-direction'], values['probe-hook']);
    check(probe.hook, values['ablate-direction']);
    edits.push(ablationEdit(probe, { positions }));
  }
  return edits;
}

/** The same interventions as tfjs forward hooks. */
export function steerHooks(model: HookedModel, values: SteerValues): FwdHook[] {
  return steerEdits(model, values).map(editHook);
}
