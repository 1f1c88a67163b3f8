#!/usr/bin/python3
"""
Independent float32 PyTorch reference for LLaVA-style checkpoints (CLIP or SigLIP tower, GELU
projector, Llama/Qwen2 text model), written from the Hugging Face modelling code's semantics and
sharing nothing with hooklens's TypeScript runtime. A development tool, not a dependency: it
produces the reference files under test/fixtures/vlm/ that the tests compare against, and it
checks itself against ../shared/fixtures/tiny-llava first.

  /usr/bin/python3 scripts/reference/tiny_vlm_reference.py check ../shared/fixtures/tiny-llava
  /usr/bin/python3 scripts/reference/tiny_vlm_reference.py make OUT_DIR --seed S --layout legacy|new
        --tower clip|siglip --text llama|qwen2 [--strategy default|full] [--feature-layer -2]
        [--shards N]

Needs Debian's python3-torch and python3-numpy (apt-get install python3-torch); no transformers.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

torch.set_grad_enabled(True)
DT = torch.float32


# ----------------------------------------------------------------------------------------------
# safetensors by hand (the format is 8 bytes of header length, JSON header, raw data)

def read_safetensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == '__metadata__':
            continue
        assert e['dtype'] == 'F32', e['dtype']
        b, end = e['data_offsets']
        out[name] = torch.from_numpy(np.frombuffer(data[b:end], dtype='<f4').copy().reshape(e['shape']))
    return out


def write_safetensors(path, tensors):
    header = {'__metadata__': {'format': 'pt'}}
    blobs = []
    off = 0
    for name in sorted(tensors):
        arr = tensors[name].detach().numpy().astype('<f4')
        raw = arr.tobytes()
        header[name] = {'dtype': 'F32', 'shape': list(arr.shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b' ' * ((8 - (len(h) + 8) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_checkpoint(d):
    idx = os.path.join(d, 'model.safetensors.index.json')
    if os.path.exists(idx):
        wm = json.load(open(idx))['weight_map']
        out = {}
        for shard in sorted(set(wm.values())):
            out.update(read_safetensors(os.path.join(d, shard)))
        return out
    return read_safetensors(os.path.join(d, 'model.safetensors'))


# ----------------------------------------------------------------------------------------------
# RelP rules as autograd functions (forward values unchanged)

class IdentityRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn_id):
        y = ACTS[fn_id](x)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, y = ctx.saved_tensors
        nudged = x + torch.where(x >= 0, torch.full_like(x, 1e-6), torch.full_like(x, -1e-6))
        return dy * y / nudged, None


class HalfProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved_tensors
        return 0.5 * dy * b, 0.5 * dy * a


ACTS = {
    'silu': lambda x: x * torch.sigmoid(x),
    'gelu': lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    'gelu_pytorch_tanh': lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    'quick_gelu': lambda x: x * torch.sigmoid(1.702 * x),
}


class Run:
    """One forward: hooks may replace activations; `record` keeps them; rules change gradients."""

    def __init__(self, rules=(), replace=None, record=None, leaf=None):
        self.rules = set(rules)
        self.replace = replace or {}
        self.record = record if record is not None else {}
        self.leaf = leaf or set()   # names whose activations become grad leaves (for AtP)
        self.leaves = {}

    def hook(self, name, x):
        if name in self.replace:
            x = self.replace[name](x)
        if name in self.leaf:
            x = x.detach().requires_grad_(True) if not x.requires_grad else x
            # Keep the graph: add a zero leaf so d/d(leaf) = d/d(activation).
            z = torch.zeros_like(x, requires_grad=True)
            self.leaves[name] = z
            x = x + z
        self.record[name] = x
        return x

    def act(self, kind, x):
        if 'Identity' in self.rules:
            return IdentityRule.apply(x, kind)
        return ACTS[kind](x)

    def product(self, a, b):
        return HalfProduct.apply(a, b) if 'Half' in self.rules else a * b

    def scale(self, s):
        return s.detach() if 'LN' in self.rules else s


def layer_norm(run, x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    c = x - mu
    s = torch.sqrt((c * c).mean(-1, keepdim=True) + eps)
    return c / run.scale(s) * w + b


def rms_norm(run, x, w, eps):
    s = torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    return x / run.scale(s) * w


def linear(x, w, b=None):
    y = x @ w.T
    return y + b if b is not None else y


# ----------------------------------------------------------------------------------------------
# Vision tower (CLIP / SigLIP), HF semantics: hidden_states[i] is the input of encoder layer i.

def vision_forward(run, W, vcfg, tower, pixels, P):
    d = vcfg['hidden_size']
    H = vcfg['num_attention_heads']
    dh = d // H
    eps = vcfg.get('layer_norm_eps', 1e-5)
    act = vcfg.get('hidden_act', 'quick_gelu' if tower == 'clip' else 'gelu_pytorch_tanh')
    p = vcfg['patch_size']
    wpatch = W[P + 'embeddings.patch_embedding.weight']
    bpatch = W.get(P + 'embeddings.patch_embedding.bias')
    x = torch.nn.functional.conv2d(pixels, wpatch, bpatch, stride=p)  # [n, d, gh, gw]
    x = x.flatten(2).transpose(1, 2)
    n = x.shape[0]
    if tower == 'clip':
        cls = W[P + 'embeddings.class_embedding'].reshape(1, 1, d).expand(n, 1, d)
        x = torch.cat([cls, x], 1)
    x = x + W[P + 'embeddings.position_embedding.weight'][None]
    x = run.hook('vision.hook_embed', x)
    if tower == 'clip':
        x = layer_norm(run, x, W[P + 'pre_layrnorm.weight'], W[P + 'pre_layrnorm.bias'], eps)
    hidden = []
    L = vcfg['num_hidden_layers']
    for l in range(L):
        hidden.append(x)
        lp = f'{P}encoder.layers.{l}.'
        hp = f'vision.blocks.{l}.'
        r = run.hook(hp + 'hook_resid_pre', x)
        h = layer_norm(run, r, W[lp + 'layer_norm1.weight'], W[lp + 'layer_norm1.bias'], eps)
        q = linear(h, W[lp + 'self_attn.q_proj.weight'], W[lp + 'self_attn.q_proj.bias']).reshape(n, -1, H, dh).transpose(1, 2)
        k = linear(h, W[lp + 'self_attn.k_proj.weight'], W[lp + 'self_attn.k_proj.bias']).reshape(n, -1, H, dh).transpose(1, 2)
        v = linear(h, W[lp + 'self_attn.v_proj.weight'], W[lp + 'self_attn.v_proj.bias']).reshape(n, -1, H, dh).transpose(1, 2)
        pat = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), -1)
        if 'AH' in run.rules:
            pat = pat.detach()
        z = (pat @ v).transpose(1, 2).reshape(n, -1, d)
        a = run.hook(hp + 'hook_attn_out', linear(z, W[lp + 'self_attn.out_proj.weight'], W[lp + 'self_attn.out_proj.bias']))
        r = r + a
        h = layer_norm(run, r, W[lp + 'layer_norm2.weight'], W[lp + 'layer_norm2.bias'], eps)
        post = run.hook(hp + 'mlp.hook_post', run.act(act, linear(h, W[lp + 'mlp.fc1.weight'], W[lp + 'mlp.fc1.bias'])))
        m = run.hook(hp + 'hook_mlp_out', linear(post, W[lp + 'mlp.fc2.weight'], W[lp + 'mlp.fc2.bias']))
        x = run.hook(hp + 'hook_resid_post', r + m)
    hidden.append(x)
    return hidden


# ----------------------------------------------------------------------------------------------
# Llama / Qwen2 text model

def rope(x, pos, theta):
    dh = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, dh, 2, dtype=DT) / dh))
    f = pos[:, None].to(DT) * inv[None]
    emb = torch.cat([f, f], -1)
    cos, sin = emb.cos(), emb.sin()
    x1, x2 = x[..., : dh // 2], x[..., dh // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def lm_forward(run, W, tcfg, P, head_name, embeds):
    d = tcfg['hidden_size']
    H = tcfg['num_attention_heads']
    K = tcfg.get('num_key_value_heads', H)
    dh = d // H
    eps = tcfg.get('rms_norm_eps', 1e-6)
    theta = tcfg.get('rope_theta', 10000.0)
    act = tcfg.get('hidden_act', 'silu')
    qwen = tcfg.get('model_type') == 'qwen2'
    x = run.hook('hook_embed', embeds)
    n, T, _ = x.shape
    pos = torch.arange(T)
    mask = torch.full((T, T), float('-inf')).triu(1)
    for l in range(tcfg['num_hidden_layers']):
        lp = f'{P}layers.{l}.'
        hp = f'blocks.{l}.'
        r = run.hook(hp + 'hook_resid_pre', x)
        h = rms_norm(run, r, W[lp + 'input_layernorm.weight'], eps)
        bq = W.get(lp + 'self_attn.q_proj.bias') if qwen else None
        bk = W.get(lp + 'self_attn.k_proj.bias') if qwen else None
        bv = W.get(lp + 'self_attn.v_proj.bias') if qwen else None
        q = linear(h, W[lp + 'self_attn.q_proj.weight'], bq).reshape(n, T, H, dh).transpose(1, 2)
        k = linear(h, W[lp + 'self_attn.k_proj.weight'], bk).reshape(n, T, K, dh).transpose(1, 2)
        v = linear(h, W[lp + 'self_attn.v_proj.weight'], bv).reshape(n, T, K, dh).transpose(1, 2)
        q, k = rope(q, pos, theta), rope(k, pos, theta)
        k = k.repeat_interleave(H // K, 1)
        v = v.repeat_interleave(H // K, 1)
        pat = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + mask, -1)
        if 'AH' in run.rules:
            pat = pat.detach()
        z = (pat @ v).transpose(1, 2).reshape(n, T, H * dh)
        a = run.hook(hp + 'hook_attn_out', linear(z, W[lp + 'self_attn.o_proj.weight']))
        r = r + a
        h = rms_norm(run, r, W[lp + 'post_attention_layernorm.weight'], eps)
        gate = run.act(act, linear(h, W[lp + 'mlp.gate_proj.weight']))
        post = run.hook(hp + 'mlp.hook_post', run.product(gate, linear(h, W[lp + 'mlp.up_proj.weight'])))
        m = run.hook(hp + 'hook_mlp_out', linear(post, W[lp + 'mlp.down_proj.weight']))
        x = run.hook(hp + 'hook_resid_post', r + m)
    x = rms_norm(run, x, W[P + 'norm.weight'], eps)
    head = W[head_name] if head_name in W else W[P + 'embed_tokens.weight']
    return x @ head.T


# ----------------------------------------------------------------------------------------------

def layout_of(W):
    if 'vision_tower.vision_model.embeddings.patch_embedding.weight' in W:
        return {'vision': 'vision_tower.vision_model.', 'proj': 'multi_modal_projector.', 'lm': 'language_model.model.', 'head': 'language_model.lm_head.weight'}
    return {'vision': 'model.vision_tower.vision_model.', 'proj': 'model.multi_modal_projector.', 'lm': 'model.language_model.', 'head': 'lm_head.weight'}


def llava_forward(run, W, cfg, tokens, pixels):
    lay = layout_of(W)
    vcfg, tcfg = cfg['vision_config'], cfg['text_config']
    tower = 'siglip' if vcfg.get('model_type') == 'siglip_vision_model' else 'clip'
    hidden = vision_forward(run, W, vcfg, tower, pixels, lay['vision'])
    feat = hidden[cfg.get('vision_feature_layer', -2)]
    if cfg.get('vision_feature_select_strategy', 'default') == 'default':
        feat = feat[:, 1:]
    pj = lay['proj']
    act = cfg.get('projector_hidden_act', 'gelu')
    img = linear(run.act(act, linear(feat, W[pj + 'linear_1.weight'], W[pj + 'linear_1.bias'])), W[pj + 'linear_2.weight'], W[pj + 'linear_2.bias'])
    img = run.hook('hook_image_embeds', img)
    ids = torch.tensor(tokens)
    emb = W[lay['lm'] + 'embed_tokens.weight'][ids]
    m = ids == cfg['image_token_index']
    flat = img.reshape(-1, img.shape[-1])
    rows = []
    j = 0
    for t in range(len(tokens)):
        if m[t]:
            rows.append(flat[j])
            j += 1
        else:
            rows.append(emb[t])
    assert j == flat.shape[0], (j, flat.shape)
    embeds = torch.stack(rows)[None]
    return lm_forward(run, W, tcfg, lay['lm'], lay['head'], embeds)


def ld_of(logits, answer, wrong):
    return logits[0, -1, answer] - logits[0, -1, wrong]


def patching_grids(W, cfg, tokens, clean_px, corrupt_px, answer, wrong, rules):
    vL = cfg['vision_config']['num_hidden_layers']
    tL = cfg['text_config']['num_hidden_layers']
    with torch.no_grad():
        rc = Run()
        ld_clean = ld_of(llava_forward(rc, W, cfg, tokens, clean_px), answer, wrong).item()
        clean_acts = {k: v.clone() for k, v in rc.record.items()}
        rx = Run()
        ld_corrupt = ld_of(llava_forward(rx, W, cfg, tokens, corrupt_px), answer, wrong).item()
        corrupt_acts = {k: v.clone() for k, v in rx.record.items()}
    denom = ld_clean - ld_corrupt
    comps = {
        'resid_pre': ('blocks.{}.hook_resid_pre', tL),
        'attn_out': ('blocks.{}.hook_attn_out', tL),
        'mlp_out': ('blocks.{}.hook_mlp_out', tL),
        'vision.resid_pre': ('vision.blocks.{}.hook_resid_pre', vL),
        'vision.attn_out': ('vision.blocks.{}.hook_attn_out', vL),
        'vision.mlp_out': ('vision.blocks.{}.hook_mlp_out', vL),
    }
    grids = {}
    for comp, (pat, L) in comps.items():
        names = [pat.format(l) for l in range(L)]
        n_pos = clean_acts[names[0]].shape[1]
        act = []
        with torch.no_grad():
            for l, name in enumerate(names):
                for t in range(n_pos):
                    def rep(x, t=t, name=name):
                        y = x.clone()
                        y[:, t] = clean_acts[name][:, t]
                        return y
                    ld = ld_of(llava_forward(Run(replace={name: rep}), W, cfg, tokens, corrupt_px), answer, wrong).item()
                    act.append((ld - ld_corrupt) / denom)
        out = {'activation': act, 'shape': [L, n_pos]}
        for method, rs in (('atp', ()), ('relp', rules)):
            r = Run(rules=rs, leaf=set(names))
            ld = ld_of(llava_forward(r, W, cfg, tokens, corrupt_px), answer, wrong)
            grads = torch.autograd.grad(ld, [r.leaves[nm] for nm in names], allow_unused=True)
            vals = []
            for nm, g in zip(names, grads):
                if g is None:
                    g = torch.zeros_like(clean_acts[nm])
                s = ((clean_acts[nm] - corrupt_acts[nm]) * g).sum(-1)[0] / denom
                vals.extend(s.tolist())
            out[method] = vals
        grids[comp] = out
    return {'ld_clean': ld_clean, 'ld_corrupt': ld_corrupt, 'grids': grids}


def reference_for(d, tokens, answer, wrong):
    cfg = json.load(open(os.path.join(d, 'config.json')))
    W = read_checkpoint(d)
    px = read_safetensors(os.path.join(d, 'pixel_values.safetensors'))['pixel_values']
    rec = Run()
    with torch.no_grad():
        logits = llava_forward(rec, W, cfg, tokens, px[0:1])
    wanted = ['vision.hook_embed', 'hook_image_embeds', 'hook_embed']
    for l in range(cfg['vision_config']['num_hidden_layers']):
        wanted += [f'vision.blocks.{l}.hook_resid_post', f'vision.blocks.{l}.mlp.hook_post', f'vision.blocks.{l}.hook_resid_pre', f'vision.blocks.{l}.hook_attn_out']
    for l in range(cfg['text_config']['num_hidden_layers']):
        wanted += [f'blocks.{l}.hook_resid_post', f'blocks.{l}.mlp.hook_post', f'blocks.{l}.hook_resid_pre', f'blocks.{l}.hook_attn_out']
    acts = {n: {'shape': list(rec.record[n].shape[1:]), 'values': [round(v, 7) for v in rec.record[n][0].flatten().tolist()]} for n in wanted}
    patch = patching_grids(W, cfg, tokens, px[0:1], px[1:2], answer, wrong, ('LN', 'Identity', 'Half'))
    return logits, acts, patch


def check(d):
    ref = json.load(open(os.path.join(d, 'reference.json')))
    p = ref['patching']
    logits, acts, patch = reference_for(d, ref['tokens'], p['answer'], p['wrong'])
    worst = 0.0
    worst = max(worst, float(np.abs(logits[0].flatten().numpy() - np.array(ref['logits'])).max()))
    print('logits max diff', worst)
    for name, a in ref['activations'].items():
        diff = float(np.abs(np.array(acts[name]['values']) - np.array(a['values'])).max())
        print(f'{name:40s} {diff:.2e}')
        worst = max(worst, diff)
    for comp, g in p['grids'].items():
        for m in ('activation', 'atp', 'relp'):
            diff = float(np.abs(np.array(patch['grids'][comp][m]) - np.array(g[m])).max())
            print(f'grid {comp:18s} {m:10s} {diff:.2e}')
            worst = max(worst, diff)
    print('ld', patch['ld_clean'], p['ld_clean'], patch['ld_corrupt'], p['ld_corrupt'])
    print('WORST', worst)
    return worst


# ----------------------------------------------------------------------------------------------
# Random tiny checkpoints in either layout

def random_tower_weights(rnd, P, tower, dv, mv, Lv, image_size, patch):
    """A CLIP/SigLIP tower's weights under prefix P, drawn in a fixed order (fixtures depend on it)."""
    n_patch = (image_size // patch) ** 2
    W = {}
    W[P + 'embeddings.patch_embedding.weight'] = rnd(dv, 3, patch, patch, std=0.1)
    if tower == 'clip':
        W[P + 'embeddings.class_embedding'] = rnd(dv)
        W[P + 'embeddings.position_embedding.weight'] = rnd(n_patch + 1, dv)
        W[P + 'pre_layrnorm.weight'] = 1 + rnd(dv, std=0.1)
        W[P + 'pre_layrnorm.bias'] = rnd(dv, std=0.1)
    else:
        W[P + 'embeddings.patch_embedding.bias'] = rnd(dv, std=0.1)
        W[P + 'embeddings.position_embedding.weight'] = rnd(n_patch, dv)
    W[P + 'post_layernorm.weight'] = 1 + rnd(dv, std=0.1)
    W[P + 'post_layernorm.bias'] = rnd(dv, std=0.1)
    for l in range(Lv):
        lp = f'{P}encoder.layers.{l}.'
        for nm in ('q', 'k', 'v', 'out'):
            W[lp + f'self_attn.{nm}_proj.weight'] = rnd(dv, dv)
            W[lp + f'self_attn.{nm}_proj.bias'] = rnd(dv, std=0.05)
        for nm in ('layer_norm1', 'layer_norm2'):
            W[lp + nm + '.weight'] = 1 + rnd(dv, std=0.1)
            W[lp + nm + '.bias'] = rnd(dv, std=0.1)
        W[lp + 'mlp.fc1.weight'] = rnd(mv, dv)
        W[lp + 'mlp.fc1.bias'] = rnd(mv, std=0.05)
        W[lp + 'mlp.fc2.weight'] = rnd(dv, mv)
        W[lp + 'mlp.fc2.bias'] = rnd(dv, std=0.05)
    return W


def make(out, seed, layout, tower, text, strategy, feature_layer, shards, image_size=32, patch=8):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s, std=0.2: (torch.randn(*s, generator=g) * std).to(DT)
    dv, Hv, Lv, mv = 40, 4, 3, 80
    d, H, K, L, m, V = 48, 4, 2, 3, 72, 97
    if tower == 'siglip':
        dv, Hv, Lv, mv = 32, 2, 2, 64
    img_tok = 93
    vcfg = {
        'model_type': 'clip_vision_model' if tower == 'clip' else 'siglip_vision_model',
        'hidden_size': dv, 'intermediate_size': mv, 'num_hidden_layers': Lv, 'num_attention_heads': Hv,
        'image_size': image_size, 'patch_size': patch, 'hidden_act': 'quick_gelu' if tower == 'clip' else 'gelu_pytorch_tanh',
        'layer_norm_eps': 1e-5 if tower == 'clip' else 1e-6, 'num_channels': 3,
    }
    tcfg = {
        'model_type': text, 'hidden_size': d, 'num_hidden_layers': L, 'num_attention_heads': H, 'num_key_value_heads': K,
        'intermediate_size': m, 'vocab_size': V, 'rms_norm_eps': 1e-6, 'rope_theta': 10000.0, 'hidden_act': 'silu',
        'max_position_embeddings': 128, 'tie_word_embeddings': text == 'qwen2',
    }
    cfg = {
        'model_type': 'llava', 'architectures': ['LlavaForConditionalGeneration'], 'image_token_index': img_tok,
        'projector_hidden_act': 'gelu', 'vision_feature_layer': feature_layer, 'vision_feature_select_strategy': strategy,
        'vision_config': vcfg, 'text_config': tcfg,
    }
    lay = {'legacy': {'vision': 'vision_tower.vision_model.', 'proj': 'multi_modal_projector.', 'lm': 'language_model.model.', 'head': 'language_model.lm_head.weight'},
           'new': {'vision': 'model.vision_tower.vision_model.', 'proj': 'model.multi_modal_projector.', 'lm': 'model.language_model.', 'head': 'lm_head.weight'}}[layout]
    P = lay['vision']
    W = random_tower_weights(rnd, P, tower, dv, mv, Lv, image_size, patch)
    n_patch = (image_size // patch) ** 2
    pj = lay['proj']
    W[pj + 'linear_1.weight'] = rnd(d, dv)
    W[pj + 'linear_1.bias'] = rnd(d, std=0.05)
    W[pj + 'linear_2.weight'] = rnd(d, d)
    W[pj + 'linear_2.bias'] = rnd(d, std=0.05)
    lm = lay['lm']
    W[lm + 'embed_tokens.weight'] = rnd(V, d, std=0.5)
    W[lm + 'norm.weight'] = 1 + rnd(d, std=0.1)
    dh = d // H
    for l in range(L):
        lp = f'{lm}layers.{l}.'
        W[lp + 'self_attn.q_proj.weight'] = rnd(H * dh, d)
        W[lp + 'self_attn.k_proj.weight'] = rnd(K * dh, d)
        W[lp + 'self_attn.v_proj.weight'] = rnd(K * dh, d)
        W[lp + 'self_attn.o_proj.weight'] = rnd(d, H * dh)
        if text == 'qwen2':
            W[lp + 'self_attn.q_proj.bias'] = rnd(H * dh, std=0.05)
            W[lp + 'self_attn.k_proj.bias'] = rnd(K * dh, std=0.05)
            W[lp + 'self_attn.v_proj.bias'] = rnd(K * dh, std=0.05)
        W[lp + 'input_layernorm.weight'] = 1 + rnd(d, std=0.1)
        W[lp + 'post_attention_layernorm.weight'] = 1 + rnd(d, std=0.1)
        W[lp + 'mlp.gate_proj.weight'] = rnd(m, d)
        W[lp + 'mlp.up_proj.weight'] = rnd(m, d)
        W[lp + 'mlp.down_proj.weight'] = rnd(d, m)
    if text != 'qwen2':
        W[lay['head']] = rnd(V, d, std=0.5)
    os.makedirs(out, exist_ok=True)
    json.dump(cfg, open(os.path.join(out, 'config.json'), 'w'), indent=2)
    if shards > 1:
        names = sorted(W)
        per = math.ceil(len(names) / shards)
        wm = {}
        for i in range(shards):
            part = names[i * per:(i + 1) * per]
            fn = f'model-{i + 1:05d}-of-{shards:05d}.safetensors'
            write_safetensors(os.path.join(out, fn), {k: W[k] for k in part})
            wm.update({k: fn for k in part})
        json.dump({'metadata': {'total_size': 0}, 'weight_map': wm}, open(os.path.join(out, 'model.safetensors.index.json'), 'w'), indent=2)
    else:
        write_safetensors(os.path.join(out, 'model.safetensors'), W)
    px = (torch.rand(2, 3, image_size, image_size, generator=g) * 4 - 2).to(DT)
    write_safetensors(os.path.join(out, 'pixel_values.safetensors'), {'pixel_values': px})
    n_img = n_patch + (1 if tower == 'clip' else 0) - (1 if strategy == 'default' else 0)
    tokens = [1, 5, 9] + [img_tok] * n_img + [17, 42, 3, 8]
    # Answer / wrong: the pair of tokens whose logit difference the two images move most.
    with torch.no_grad():
        lc = llava_forward(Run(), W, cfg, tokens, px[0:1])[0, -1]
        lx = llava_forward(Run(), W, cfg, tokens, px[1:2])[0, -1]
    delta = (lc - lx)
    answer, wrong = int(delta.argmax()), int(delta.argmin())
    logits, acts, patch = reference_for(out, tokens, answer, wrong)
    ref = {
        'tokens': tokens, 'image_token_index': img_tok, 'n_image_tokens': n_img,
        'logits': [round(v, 6) for v in logits[0].flatten().tolist()], 'logits_shape': list(logits.shape[1:]),
        'activations': acts,
        'patching': {'answer': answer, 'wrong': wrong, 'clean_image': 0, 'corrupt_image': 1, 'direction': 'denoising',
                     'relp_rules': ['Half', 'Identity', 'LN'], 'ld_clean': round(patch['ld_clean'], 6), 'ld_corrupt': round(patch['ld_corrupt'], 6),
                     'grids': {c: {k: ([round(v, 6) for v in x] if k != 'shape' else x) for k, x in g.items()} for c, g in patch['grids'].items()}},
        'generator': f'scripts/reference/tiny_vlm_reference.py make --seed {seed} --layout {layout} --tower {tower} --text {text} --strategy {strategy} --feature-layer {feature_layer} --shards {shards} --image-size {image_size}',
    }
    json.dump(ref, open(os.path.join(out, 'reference.json'), 'w'))
    print(f'wrote {out}: ld_clean {patch["ld_clean"]:.4f} ld_corrupt {patch["ld_corrupt"]:.4f}')


def make_tower(out, seed, tower, image_size=32, patch=8):
    """A standalone CLIPVisionModel / SiglipVisionModel directory (weights under vision_model.)."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s, std=0.2: (torch.randn(*s, generator=g) * std).to(DT)
    dv, Hv, Lv, mv = (36, 3, 2, 72) if tower == 'clip' else (40, 4, 3, 96)
    vcfg = {
        'model_type': 'clip_vision_model' if tower == 'clip' else 'siglip_vision_model',
        'architectures': ['CLIPVisionModel' if tower == 'clip' else 'SiglipVisionModel'],
        'hidden_size': dv, 'intermediate_size': mv, 'num_hidden_layers': Lv, 'num_attention_heads': Hv,
        'image_size': image_size, 'patch_size': patch, 'hidden_act': 'quick_gelu' if tower == 'clip' else 'gelu_pytorch_tanh',
        'layer_norm_eps': 1e-5 if tower == 'clip' else 1e-6, 'num_channels': 3,
    }
    P = 'vision_model.'
    W = random_tower_weights(rnd, P, tower, dv, mv, Lv, image_size, patch)
    os.makedirs(out, exist_ok=True)
    json.dump(vcfg, open(os.path.join(out, 'config.json'), 'w'), indent=2)
    write_safetensors(os.path.join(out, 'model.safetensors'), W)
    px = (torch.rand(2, 3, image_size, image_size, generator=g) * 4 - 2).to(DT)
    write_safetensors(os.path.join(out, 'pixel_values.safetensors'), {'pixel_values': px})
    rec = Run()
    with torch.no_grad():
        hidden = vision_forward(rec, W, vcfg, tower, px, P)
        last = hidden[-1]
        if tower == 'siglip':
            last = layer_norm(Run(), last, W[P + 'post_layernorm.weight'], W[P + 'post_layernorm.bias'], vcfg['layer_norm_eps'])
    wanted = ['vision.hook_embed'] + [f'vision.blocks.{l}.{h}' for l in range(Lv) for h in ('hook_resid_pre', 'hook_attn_out', 'mlp.hook_post', 'hook_resid_post')]
    # Both images: batch element b of every activation.
    acts = {n: {'shape': list(rec.record[n].shape), 'values': [round(v, 7) for v in rec.record[n].flatten().tolist()]} for n in wanted}
    ref = {'last_hidden_state': {'shape': list(last.shape), 'values': [round(v, 7) for v in last.flatten().tolist()]}, 'activations': acts,
           'generator': f'scripts/reference/tiny_vlm_reference.py make-tower --seed {seed} --tower {tower}'}
    json.dump(ref, open(os.path.join(out, 'reference.json'), 'w'))
    print(f'wrote {out}')


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('cmd', choices=['check', 'make', 'make-tower'])
    ap.add_argument('dir')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--layout', default='new')
    ap.add_argument('--tower', default='siglip')
    ap.add_argument('--text', default='llama')
    ap.add_argument('--strategy', default='full')
    ap.add_argument('--feature-layer', type=int, default=-1)
    ap.add_argument('--shards', type=int, default=1)
    ap.add_argument('--image-size', type=int, default=32)
    a = ap.parse_args()
    if a.cmd == 'check':
        w = check(a.dir)
        sys.exit(0 if w < 1e-3 else 1)
    if a.cmd == 'make-tower':
        make_tower(a.dir, a.seed, a.tower)
        sys.exit(0)
    make(a.dir, a.seed, a.layout, a.tower, a.text, a.strategy, a.feature_layer, a.shards, a.image_size)
