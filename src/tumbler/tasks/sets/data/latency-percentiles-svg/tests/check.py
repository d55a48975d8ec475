import csv, json, math, os, struct, sys, zlib
from collections import defaultdict

DATA = "/tests/data"          # the verifier's own copy of the data, not the agent's

def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)

def answer_json(path="/app/answer.json"):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}")

def answer_lines(path="/app/answer.txt"):
    try:
        return [l.strip() for l in open(path) if l.strip()]
    except OSError as exc:
        fail(f"cannot read {path}: {exc}")

def close(a, b, tol=0.011):
    try:
        return abs(float(a) - float(b)) <= tol
    except (TypeError, ValueError):
        return False

def rows(name):
    with open(os.path.join(DATA, name)) as fh:
        return list(csv.DictReader(fh))

def check_png(path, min_w=300, min_h=200):
    data = open(path, "rb").read() if os.path.isfile(path) else fail(f"no {path}")
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail(f"{path} is not a PNG")
    pos, idat, w = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc, = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            fail(f"{path}: bad CRC in chunk {kind!r}")
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    if w is None or w < min_w or h < min_h:
        fail(f"{path}: image is {w}x{h if w else None}, wanted at least {min_w}x{min_h}")
    pixels = zlib.decompress(idat)
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    if len(pixels) != h * (1 + w * channels * depth // 8):
        fail(f"{path}: pixel data does not match its size")
    if len(set(pixels[1:: max(1, len(pixels) // 5000)])) < 3:
        fail(f"{path} is blank")

def check_jpeg(path, min_w=300, min_h=200):
    data = open(path, "rb").read() if os.path.isfile(path) else fail(f"no {path}")
    if data[:3] != b"\xff\xd8\xff" or data[-2:] != b"\xff\xd9":
        fail(f"{path} is not a JPEG")
    pos = 2
    while pos < len(data) - 9:
        if data[pos] != 0xFF:
            fail(f"{path}: broken JPEG marker at {pos}")
        marker = data[pos + 1]
        length, = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker in (0xC0, 0xC1, 0xC2):
            h, w = struct.unpack(">HH", data[pos + 5:pos + 9])
            if w < min_w or h < min_h:
                fail(f"{path}: image is {w}x{h}")
            if len(data) < 5000:
                fail(f"{path} is too small to be a chart")
            return
        pos += 2 + length
    fail(f"{path}: no frame header")

def check_svg(path, min_shapes=5):
    import xml.etree.ElementTree as ET
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        fail(f"{path} is not an SVG: {exc}")
    if root.tag != "{http://www.w3.org/2000/svg}svg":
        fail(f"{path}: root element is {root.tag}")
    shapes = [e for e in root.iter() if e.tag.split("}")[-1] in ("rect", "path", "polyline", "line", "circle", "polygon")]
    if len(shapes) < min_shapes:
        fail(f"{path} draws {len(shapes)} shapes")

by = defaultdict(list)
for r in rows("latency.csv"):
    by[r["endpoint"]].append(float(r["latency_ms"]))
def pct(xs, q):
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    f = math.floor(k)
    return xs[f] + (xs[min(f + 1, len(xs) - 1)] - xs[f]) * (k - f)
got = answer_json()
if not isinstance(got, dict) or set(got) != set(by):
    fail(f"endpoints {sorted(got) if isinstance(got, dict) else got}")
for ep, xs in by.items():
    for q, key in ((0.5, "p50"), (0.95, "p95")):
        want = round(pct(xs, q), 1)
        value = got[ep].get(key) if isinstance(got[ep], dict) else None
        if not close(value, want, tol=0.051 + want * 0.002):
            fail(f"{ep} {key}: {value} != {want}")
check_svg("/app/latency.svg")
print("percentiles and histogram right")
