"""Makes the charls_* vectors with the system CharLS 2.4 (libcharls.so.2, via ctypes); expected samples are
the original (lossless) or CharLS's own decoding (near-lossless).  Usage: python gen_charls.py OUTDIR"""
import ctypes as C, numpy as np, os, sys
lib = C.CDLL("/usr/lib/x86_64-linux-gnu/libcharls.so.2")
class FrameInfo(C.Structure):
    _fields_ = [("width", C.c_uint32), ("height", C.c_uint32), ("bits_per_sample", C.c_int32), ("component_count", C.c_int32)]
class Pcp(C.Structure):
    _fields_ = [("maxval", C.c_int32), ("t1", C.c_int32), ("t2", C.c_int32), ("t3", C.c_int32), ("reset", C.c_int32)]
lib.charls_jpegls_encoder_create.restype = C.c_void_p
lib.charls_jpegls_decoder_create.restype = C.c_void_p
lib.charls_get_error_message.restype = C.c_char_p
def ck(rc):
    if rc != 0: raise RuntimeError(lib.charls_get_error_message(rc).decode())

def encode(arr, bits, near=0, ilv=0, pcp=None):
    # arr: (h, w) or (h, w, c) uint16
    h, w = arr.shape[:2]; nc = 1 if arr.ndim == 2 else arr.shape[2]
    e = C.c_void_p(lib.charls_jpegls_encoder_create())
    ck(lib.charls_jpegls_encoder_set_frame_info(e, C.byref(FrameInfo(w, h, bits, nc))))
    ck(lib.charls_jpegls_encoder_set_near_lossless(e, near))
    ck(lib.charls_jpegls_encoder_set_interleave_mode(e, ilv))
    if pcp: ck(lib.charls_jpegls_encoder_set_preset_coding_parameters(e, C.byref(Pcp(*pcp))))
    dt = np.uint8 if bits <= 8 else np.dtype('<u2')
    if nc > 1 and ilv == 0:
        src = np.ascontiguousarray(np.moveaxis(arr, -1, 0)).astype(dt).tobytes()
    else:
        src = arr.astype(dt).tobytes()
    dst = C.create_string_buffer(len(src) * 2 + 4096)
    ck(lib.charls_jpegls_encoder_set_destination_buffer(e, dst, len(dst)))
    ck(lib.charls_jpegls_encoder_encode_from_buffer(e, src, len(src), 0))
    n = C.c_size_t(); ck(lib.charls_jpegls_encoder_get_bytes_written(e, C.byref(n)))
    lib.charls_jpegls_encoder_destroy(e)
    return dst.raw[:n.value]

def decode(cs, shape, bits, ilv):
    d = C.c_void_p(lib.charls_jpegls_decoder_create())
    ck(lib.charls_jpegls_decoder_set_source_buffer(d, cs, len(cs)))
    ck(lib.charls_jpegls_decoder_read_header(d))
    n = C.c_size_t(); ck(lib.charls_jpegls_decoder_get_destination_size(d, 0, C.byref(n)))
    buf = C.create_string_buffer(n.value)
    ck(lib.charls_jpegls_decoder_decode_to_buffer(d, buf, n.value, 0))
    lib.charls_jpegls_decoder_destroy(d)
    dt = np.uint8 if bits <= 8 else np.dtype('<u2')
    a = np.frombuffer(buf.raw, dtype=dt)
    if len(shape) == 3 and ilv == 0:
        a = np.moveaxis(a.reshape(shape[2], shape[0], shape[1]), 0, -1)
    return a.reshape(shape).astype('<u2')

def image(h, w, bits, nc, seed, maxv=None):
    r = np.random.default_rng(seed)
    maxv = maxv if maxv is not None else (1 << bits) - 1
    y, x = np.mgrid[0:h, 0:w]
    base = (x * maxv // max(w - 1, 1) // 2 + y * maxv // max(h - 1, 1) // 3)
    chans = []
    for c in range(nc):
        a = base + c * (maxv // 7) + r.integers(-maxv // 30 - 1, maxv // 30 + 2, size=(h, w))
        a[2:5, 3:] = maxv // 3 + c
        a[6, :] = maxv // 2
        a[7, 0:w // 2] = maxv // 2
        a[7, w // 2] = maxv // 2 + 1
        a[8, 5:9] = 0
        a[9, 4] = maxv; a[9, 5] = 0; a[10, 1] = maxv
        chans.append(np.clip(a, 0, maxv))
    if nc == 1: return chans[0].astype(np.uint16)
    arr = np.stack(chans, axis=-1)
    arr[3:5, 2:w - 1, :] = arr[3, 2, :]
    arr[11, :, :] = min(5, maxv)
    return arr.astype(np.uint16)

if __name__ == "__main__":
    out = sys.argv[1]; os.makedirs(out, exist_ok=True)
    cases = [
        # name, h, w, bits, nc, near, ilv, pcp, maxv
        ("charls_gray12", 12, 19, 12, 1, 0, 0, None, None),
        ("charls_gray2", 12, 21, 2, 1, 0, 0, None, None),
        ("charls_gray10_near1", 13, 16, 10, 1, 1, 0, None, None),
        ("charls_gray16_near3_params", 12, 20, 16, 1, 3, 0, (0, 40, 90, 300, 100), None),
        ("charls_gray8_reset3", 12, 18, 8, 1, 0, 0, (0, 0, 0, 0, 3), None),
        ("charls_gray6_near2", 12, 18, 6, 1, 2, 0, None, None),
        ("charls_rgb12_line_near2", 12, 14, 12, 3, 2, 1, None, None),
        ("charls_rgb12_sample", 12, 14, 12, 3, 0, 2, None, None),
        ("charls_four_none", 12, 11, 8, 4, 0, 0, None, None),
        ("charls_four_line", 12, 11, 8, 4, 0, 1, None, None),
        ("charls_four_sample", 12, 11, 8, 4, 0, 2, None, None),
        ("charls_rgb16_sample_near7", 12, 9, 16, 3, 7, 2, None, None),
        ("charls_gray8_1x12", 12, 1, 8, 1, 0, 0, None, None),
    ]
    for i, (name, h, w, bits, nc, near, ilv, pcp, maxv) in enumerate(cases):
        if w < 10:
            arr = np.random.default_rng(i).integers(0, (1 << bits), size=(h, w) if nc == 1 else (h, w, nc)).astype(np.uint16)
            arr[3:6] = 7
        else:
            arr = image(h, w, bits, nc, 200 + i, maxv)
        try:
            cs = encode(arr, bits, near, ilv, pcp)
        except Exception as ex:
            print("SKIP", name, ex); continue
        try:
            dec = decode(cs, arr.shape, bits, ilv)
        except Exception as ex:
            if near: print("SKIP (no oracle)", name, ex); continue
            print("  (charls cannot decode", name, "- using original)"); dec = arr.astype('<u2')
        if near == 0: assert (dec == arr).all(), name
        else: assert np.abs(dec.astype(int) - arr).max() <= near and not (dec == arr).all(), name
        open(f"{out}/{name}.jls", "wb").write(cs)
        open(f"{out}/{name}.u16", "wb").write(dec.tobytes())
        print(name, len(cs))
