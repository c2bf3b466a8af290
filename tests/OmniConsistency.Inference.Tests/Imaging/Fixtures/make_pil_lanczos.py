# Regenerates pil_lanczos.json.gz: reference outputs of PIL's Image.resize(..., Image.LANCZOS) for RGB images,
# used by PilLanczosTests. Run with a Python that has Pillow and numpy (Debian: python3-pil python3-numpy):
#   /usr/bin/python3 make_pil_lanczos.py
import base64, gzip, json
import numpy as np
from PIL import Image, __version__ as pil_version

def source(w, h, seed):
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 128 + 127 * np.sin(x * 0.7 + y * 0.3)], -1)
    img += rng.normal(0, 40, img.shape)
    img[(x // 5 + y // 4) % 2 == 0] = [255, 0, 255]  # hard edges make Lanczos overshoot, so clipping is exercised
    return np.clip(np.round(img), 0, 255).astype(np.uint8)

cases = []
for (sw, sh, seed), targets in [
    ((37, 23, 1), [(64, 64), (16, 16), (50, 11), (37, 40), (20, 23), (1, 1), (111, 7)]),
    ((200, 150, 2), [(128, 128), (64, 64)]),
    ((96, 64, 3), [(128, 128)]),
    ((1, 1, 4), [(5, 3)]),
    ((3, 1, 5), [(1, 1), (8, 2)]),
]:
    src = source(sw, sh, seed)
    for tw, th in targets:
        out = np.asarray(Image.fromarray(src, "RGB").resize((tw, th), Image.LANCZOS))
        cases.append({"source_width": sw, "source_height": sh, "width": tw, "height": th,
                      "source": base64.b64encode(src.tobytes()).decode(), "expected": base64.b64encode(out.tobytes()).decode()})

with gzip.open("pil_lanczos.json.gz", "wt") as f:
    json.dump({"pillow": pil_version, "cases": cases}, f)
print(len(cases), "cases, Pillow", pil_version)
