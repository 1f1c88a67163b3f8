#!/usr/bin/python3
"""
Independent pixel_values for test images, computed with PIL + numpy the way Hugging Face's
CLIPImageProcessor and SiglipImageProcessor do (resize with the config's resampling filter,
center crop, rescale, normalise). A development tool: writes test/fixtures/vlm/preprocess/.

  /usr/bin/python3 scripts/reference/preprocess_reference.py
"""
import json
import math
import os

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), '..', '..', 'test', 'fixtures', 'vlm', 'preprocess')

CONFIGS = {
    # CLIP-style: shortest edge then center crop, CLIP mean/std, bicubic.
    'clip': {'image_processor_type': 'CLIPImageProcessor', 'do_resize': True, 'size': {'shortest_edge': 32}, 'resample': 3,
             'do_center_crop': True, 'crop_size': {'height': 32, 'width': 32}, 'do_rescale': True, 'rescale_factor': 1 / 255,
             'do_normalize': True, 'image_mean': [0.48145466, 0.4578275, 0.40821073], 'image_std': [0.26862954, 0.26130258, 0.27577711],
             'do_convert_rgb': True},
    # SigLIP-style: straight resize to a square, mean/std 0.5, bicubic.
    'siglip': {'image_processor_type': 'SiglipImageProcessor', 'do_resize': True, 'size': {'height': 32, 'width': 32}, 'resample': 3,
               'do_rescale': True, 'rescale_factor': 1 / 255, 'do_normalize': True, 'image_mean': [0.5, 0.5, 0.5], 'image_std': [0.5, 0.5, 0.5]},
}


def test_image():
    """A smooth 48×40 RGB image (resampling filters agree closely on smooth content)."""
    w, h = 48, 40
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / 9.0)
    g = 128 + 100 * np.cos(y / 7.0)
    b = (x + y) * 2.8
    return Image.fromarray(np.clip(np.stack([r, g, b], -1), 0, 255).round().astype(np.uint8), 'RGB')


def preprocess(img, c):
    if c['size'].get('shortest_edge'):
        s = c['size']['shortest_edge']
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = s, int(s * long / short)
        nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
    else:
        nw, nh = c['size']['width'], c['size']['height']
    img = img.resize((nw, nh), resample=c['resample'])
    a = np.asarray(img).astype(np.float64)
    if c.get('do_center_crop'):
        ch, cw = c['crop_size']['height'], c['crop_size']['width']
        top = (a.shape[0] - ch) // 2
        left = (a.shape[1] - cw) // 2
        a = a[top:top + ch, left:left + cw]
    a = a * c['rescale_factor']
    a = (a - np.array(c['image_mean'])) / np.array(c['image_std'])
    return a.transpose(2, 0, 1).astype(np.float32)


def main():
    os.makedirs(OUT, exist_ok=True)
    img = test_image()
    img.save(os.path.join(OUT, 'smooth.png'))
    img.convert('RGB').save(os.path.join(OUT, 'smooth.jpg'), quality=95)
    for name, c in CONFIGS.items():
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        json.dump(c, open(os.path.join(d, 'preprocessor_config.json'), 'w'), indent=2)
        for img_name in ('smooth.png', 'smooth.jpg'):
            px = preprocess(Image.open(os.path.join(OUT, img_name)).convert('RGB'), c)
            stem = img_name.replace('.', '_')
            json.dump({'image': img_name, 'shape': [1, *px.shape], 'values': [round(float(v), 6) for v in px.flatten()]}, open(os.path.join(d, f'pixel_values_{stem}.json'), 'w'))
            print(name, img_name, px.shape, float(px.min()), float(px.max()))


if __name__ == '__main__':
    main()
