"""Makes the dcmtk_* vectors: synthetic native DICOM -> dcmcjpls -> codestream; dcmdjpls -> expected samples.
Usage: python gen_dcmtk.py OUTDIR  (needs pydicom, numpy, DCMTK)"""
import numpy as np, pydicom, subprocess, os, sys
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.encaps import generate_frames

OUT = sys.argv[1]
TMP = "/tmp/jlsgen"
os.makedirs(TMP, exist_ok=True)
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(1234)

def native(path, arr, bits_stored, spp):
    ds = Dataset()
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    fm.MediaStorageSOPInstanceUID = generate_uid()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = fm
    ds.SOPClassUID = fm.MediaStorageSOPClassUID
    ds.SOPInstanceUID = fm.MediaStorageSOPInstanceUID
    ds.PatientName = "Test"; ds.PatientID = "1"; ds.Modality = "OT"
    ds.StudyInstanceUID = generate_uid(); ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns = arr.shape[0], arr.shape[1]
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = "RGB" if spp == 3 else "MONOCHROME2"
    if spp == 3: ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored; ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    dt = np.uint8 if ds.BitsAllocated == 8 else np.uint16
    ds.PixelData = arr.astype(dt).tobytes()
    ds.save_as(path, enforce_file_format=True)

def image(h, w, bits, spp, seed):
    r = np.random.default_rng(seed)
    maxv = (1 << bits) - 1
    y, x = np.mgrid[0:h, 0:w]
    base = (x * maxv // max(w - 1, 1) // 2 + y * maxv // max(h - 1, 1) // 3)
    chans = []
    for c in range(spp):
        a = base.copy() + c * (maxv // 7)
        a = a + r.integers(-maxv // 40 - 1, maxv // 40 + 2, size=(h, w))
        # flat areas -> run mode, runs to end of line, interruptions
        a[2:5, 3:] = maxv // 3 + c
        a[6, :] = maxv // 2
        a[7, 0:w // 2] = maxv // 2
        a[7, w // 2] = maxv // 2 + 1
        a[8, 5:9] = 0
        # spikes -> escape codes
        a[9, 4] = maxv; a[9, 5] = 0; a[10 % h, 1] = maxv
        chans.append(np.clip(a, 0, maxv))
    if spp == 1:
        return chans[0]
    # make channels share a flat area so sample-interleaved runs occur
    arr = np.stack(chans, axis=-1)
    arr[3:5, 2:w - 1, :] = arr[3, 2, :]
    arr[11 % h, :, :] = 5
    return arr

cases = [
    # name, h, w, bits, spp, dcmcjpls args
    ("gray8", 13, 17, 8, 1, []),
    ("gray12", 12, 19, 12, 1, []),
    ("gray16", 11, 23, 16, 1, []),
    ("gray5", 12, 10, 5, 1, []),
    ("gray8_near2", 13, 17, 8, 1, ["+en", "+md", "2"]),
    ("gray16_near5", 11, 23, 16, 1, ["+en", "+md", "5"]),
    ("gray8_params", 13, 17, 8, 1, ["+t1", "5", "+t2", "9", "+t3", "30", "+rs", "16"]),
    ("rgb8_none", 12, 15, 8, 3, ["+in"]),
    ("rgb8_line", 12, 15, 8, 3, ["+il"]),
    ("rgb8_sample", 12, 15, 8, 3, ["+is"]),
    ("rgb16_sample", 12, 9, 16, 3, ["+is"]),
    ("rgb8_sample_near3", 12, 15, 8, 3, ["+is", "+en", "+md", "3"]),
    ("rgb8_line_near1", 12, 15, 8, 3, ["+il", "+en", "+md", "1"]),
]
for i, (name, h, w, bits, spp, args) in enumerate(cases):
    arr = image(h, w, bits, spp, 100 + i)
    src = f"{TMP}/{name}_native.dcm"; enc = f"{TMP}/{name}_jls.dcm"; dec = f"{TMP}/{name}_dec.dcm"
    native(src, arr, bits, spp)
    subprocess.run(["dcmcjpls", *args, src, enc], check=True)
    subprocess.run(["dcmdjpls", enc, dec], check=True)
    ds = pydicom.dcmread(enc)
    frames = list(generate_frames(ds.PixelData, number_of_frames=1))
    assert len(frames) == 1
    cs = frames[0]
    exp = pydicom.dcmread(dec).pixel_array.astype("<u2")
    if "near" not in name:
        assert (exp == arr).all(), name
    else:
        assert (exp.astype(int) - arr).__abs__().max() <= int(args[-1]), name
        assert not (exp == arr).all()
    open(f"{OUT}/dcmtk_{name}.jls", "wb").write(bytes(cs))
    open(f"{OUT}/dcmtk_{name}.u16", "wb").write(exp.tobytes())
    print(name, len(cs), cs[-4:].hex(), exp.shape)
