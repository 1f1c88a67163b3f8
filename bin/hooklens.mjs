#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx, so `npx hooklens` works right after `npm install`.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
const code = await main(process.argv.slice(2));
// Exit explicitly: tfjs and onnxruntime can keep handles open.
process.exit(code);
