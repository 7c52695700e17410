"""The operator's own FMix noise (csrc/multimix_sampling.h, multimix_philox.h), called through the
native library's C ABI (mm_philox_words, mm_fmix_noise, mm_fmix_map, mm_standard_normals): the
same header code the operator compiles, in its portable and its AVX2 build. Checked against
independent references: Random123's published Philox4x32-10 answers and a numpy Philox; numpy's
irfft2 of the very spectrum the header drew; the spectrum's distribution (complex Gaussian times
FMix's 1/f^decay scale, seeded) and its normals' (the ziggurat, tails included); and the AVX2
build against the portable one, bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dali_multimix.torch.graphcut import native_available, native_library

pytestmark = pytest.mark.skipif(not native_available(), reason="libmultimix_graphcut.so not built")

MASK64 = (1 << 64) - 1


def philox_words(key: int, ctr_lo: int, ctr_hi: int, phase: int, n: int) -> np.ndarray:
    out = np.empty(n, np.uint32)
    native_library().mm_philox_words(key, ctr_lo, ctr_hi, phase, n, out.ctypes.data)
    return out


def numpy_philox(key: int, ctr_lo: int, ctr_hi: int, phase: int, n: int) -> np.ndarray:
    """Philox4x32-10 written from the paper (Salmon et al. 2011), blocks vectorised in numpy; the
    128-bit counter (ctr_hi:ctr_lo) counts blocks, phase skips words of the first."""
    blocks = (phase + n + 3) // 4
    counters = [(ctr_lo + b) & MASK64 for b in range(blocks)]
    carries = [int(c < ctr_lo) for c in counters]  # ctr_lo + b wrapped past 2^64
    his = [(ctr_hi + c) & MASK64 for c in carries]
    c = [np.array([v & 0xFFFFFFFF for v in counters], np.uint64),
         np.array([v >> 32 for v in counters], np.uint64),
         np.array([v & 0xFFFFFFFF for v in his], np.uint64),
         np.array([v >> 32 for v in his], np.uint64)]
    k0, k1 = key & 0xFFFFFFFF, key >> 32
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c[0]
        p1 = np.uint64(0xCD9E8D57) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & np.uint64(0xFFFFFFFF),
             (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & np.uint64(0xFFFFFFFF)]
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    words = np.stack(c, axis=1).reshape(-1).astype(np.uint32)
    return words[phase:phase + n]


def test_philox_words_are_random123s_known_answers():
    """Random123's kat_vectors for philox4x32_10: (counter words, key words) -> output words."""
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, expected in cases:
        got = philox_words(key[0] | key[1] << 32, ctr[0] | ctr[1] << 32, ctr[2] | ctr[3] << 32, 0, 4)
        assert got.tolist() == list(expected)
        np.testing.assert_array_equal(numpy_philox(key[0] | key[1] << 32, ctr[0] | ctr[1] << 32,
                                                   ctr[2] | ctr[3] << 32, 0, 4), got)


@pytest.mark.parametrize("phase", [0, 1, 2, 3])
@pytest.mark.parametrize("key, ctr_lo, ctr_hi", [
    (0x123456789ABCDEF0, 0, 77),          # a seed and a sample's sequence
    (5, MASK64 - 40, 3),                  # the low counter word wraps: the high one carries
    (MASK64, MASK64 - 3, MASK64),         # both wrap
    (42, 1 << 33, 0)])
def test_philox_words_equal_an_independent_philox(key, ctr_lo, ctr_hi, phase):
    n = 1003  # several of the stream's refills of 32 blocks, and a ragged end
    np.testing.assert_array_equal(philox_words(key, ctr_lo, ctr_hi, phase, n),
                                  numpy_philox(key, ctr_lo, ctr_hi, phase, n))


def fmix_noise(h: int, w: int, state=(7, 0, 3, 0), decay: float = 3.0):
    """(kys, spectrum (nky, nkx) complex, map (h, w) float32) of the header's noise."""
    lib = native_library()
    size = lib.mm_fmix_noise(*state, h, w, decay, None, None, None)
    assert size > 0
    nky, nkx = divmod(size, 65536)
    kys = np.empty(nky, np.int32)
    spectrum = np.empty((nky, nkx, 2), np.float64)
    out = np.empty((h, w), np.float32)
    assert lib.mm_fmix_noise(*state, h, w, decay, kys.ctypes.data,
                             spectrum.ctypes.data, out.ctypes.data) == size
    return kys, spectrum[..., 0] + 1j * spectrum[..., 1], out


def fmix_scale(h: int, w: int, kys: np.ndarray, nkx: int, decay: float = 3.0) -> np.ndarray:
    """FMix's spectrum scale 1 / max(|f|, 1 / max(H, W))^decay on the kept frequencies."""
    fy = np.fft.fftfreq(h)[kys][:, None]
    fx = np.fft.rfftfreq(w)[:nkx][None, :]
    return 1.0 / np.maximum(np.sqrt(fy ** 2 + fx ** 2), 1.0 / max(h, w)) ** decay


# shapes for every path of the map: odd / even sides (even ones are evaluated on a quarter of the
# rows / columns, by frequency parity), sides too small for blocks of 8 (2, 4, 6, 1x6), both
@pytest.mark.parametrize("h, w", [(32, 32), (12, 10), (7, 9), (1, 6), (33, 65), (64, 48),
                                  (224, 224), (200, 37), (2, 2), (6, 4), (4, 30), (30, 6),
                                  (18, 18), (40, 13), (13, 40), (66, 130)])
def test_map_is_the_irfft2_of_its_spectrum(h, w):
    kys, spectrum, got = fmix_noise(h, w)
    # the kept frequencies: every ky up to 16 and from h - 16 (all of them for h <= 32), kx <= 16
    fy_max = min(16, h // 2)
    expected_kys = sorted(set(range(fy_max + 1)) | set(range(max(h - fy_max, fy_max + 1), h)))
    assert kys.tolist() == expected_kys
    nkx = spectrum.shape[1]
    assert nkx == min(16, w // 2) + 1
    full = np.zeros((h, w // 2 + 1), complex)
    full[kys, :nkx] = spectrum
    expected = np.fft.irfft2(full, s=(h, w)) * (h * w)  # the map drops the 1/(HW) factor
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * np.abs(expected).max())
    assert np.abs(expected).max() > 0


def fmix_map(h: int, w: int, avx2: bool, state=(5, 1, 2, 3)):
    """(map (h, w) float32, (min, max)) of the header's portable or AVX2 build; None where the CPU
    has no AVX2."""
    out = np.empty((h, w), np.float32)
    value_range = np.empty(2, np.float32)
    done = native_library().mm_fmix_map(*state, h, w, 3.0, int(avx2), out.ctypes.data,
                                        value_range.ctypes.data)
    assert done in (0, 1)
    return (out, value_range) if done else None


@pytest.mark.parametrize("h", [1, 2, 3, 4, 6, 7, 8, 12, 16, 17, 31, 32, 33, 64, 66, 224])
def test_avx2_map_is_the_portable_map_bit_for_bit(h):
    """The operator picks the AVX2 build of the map where the CPU has it: the same operations in
    the same order (no FMA), so the same floats, for every path (odd / even sides, blocks of 8
    or single rows and columns); and the range it reports is the map's minimum and maximum."""
    for w in (1, 2, 3, 4, 5, 6, 8, 9, 10, 16, 17, 30, 31, 32, 33, 34, 63, 64, 65, 66, 130, 224):
        portable, portable_range = fmix_map(h, w, avx2=False)
        assert portable_range.tolist() == [portable.min(), portable.max()]
        avx2 = fmix_map(h, w, avx2=True)
        if avx2 is None:
            pytest.skip("this CPU has no AVX2")
        np.testing.assert_array_equal(avx2[0].view(np.uint32), portable.view(np.uint32))
        np.testing.assert_array_equal(avx2[1], portable_range)


def test_spectrum_is_complex_gaussian_times_the_fmix_scale():
    """Seeded draws from 300 streams: spectrum / scale is i.i.d. N(0, 1) in its real and imaginary
    parts (Kolmogorov-Smirnov, chi-square on 200 bins, moments, the tails, no correlation between
    parts or neighbours)."""
    h, w, parts = 32, 32, []
    for stream in range(300):
        kys, spectrum, _ = fmix_noise(h, w, state=(12345, 0, stream, stream % 4))
        z = spectrum / fmix_scale(h, w, kys, spectrum.shape[1])
        parts.append(np.stack([z.real.ravel(), z.imag.ravel()]))
    re, im = np.concatenate(parts, axis=1)
    both = np.concatenate([re, im])
    assert both.size == 300 * 32 * 17 * 2
    assert stats.kstest(both, "norm").pvalue > 1e-3
    assert abs(both.mean()) < 0.01 and abs(both.var() - 1) < 0.01
    assert abs(stats.kurtosis(both)) < 0.05  # excess kurtosis of a normal: 0
    # 200 bins of equal probability: chi-square (the ziggurat's layers, wedges and tail alike)
    counts = np.bincount(np.searchsorted(stats.norm.ppf(np.arange(1, 200) / 200), both), minlength=200)
    assert stats.chisquare(counts).pvalue > 1e-3
    # the tail beyond the ziggurat's base (r = 3.4426) and beyond 4: binomial counts within 5 sd
    for cut in (3.442619855899, 4.0):
        p = 2 * stats.norm.sf(cut)
        assert abs((np.abs(both) > cut).sum() - both.size * p) < 5 * np.sqrt(both.size * p * (1 - p))
    assert abs(np.corrcoef(re, im)[0, 1]) < 0.01
    assert abs(np.corrcoef(re[:-1], re[1:])[0, 1]) < 0.01
    assert abs(np.corrcoef(im[:-1], re[1:])[0, 1]) < 0.01
    # different streams draw different spectra
    assert not np.array_equal(parts[0], parts[1])


def standard_normals(stream: int, n: int) -> np.ndarray:
    out = np.empty(n, np.float64)
    native_library().mm_standard_normals(2024, stream, 7, stream % 4, n, out.ctypes.data)
    return out


def test_ziggurat_normals_and_their_tail():
    """The spectrum's normals (the ziggurat: layers, wedges, and the tail beyond its base r by
    Marsaglia's rejection) directly: 2M draws are N(0, 1) by Kolmogorov-Smirnov and chi-square on
    500 equiprobable bins; 10M draws give ~5,800 beyond r, distributed as the normal's tail."""
    z = standard_normals(0, 2_000_000)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    counts = np.bincount(np.searchsorted(stats.norm.ppf(np.arange(1, 500) / 500), z), minlength=500)
    assert stats.chisquare(counts).pvalue > 1e-3
    r = 3.442619855899
    tail = np.concatenate([np.abs(t[np.abs(t) > r]) for t in
                           (standard_normals(stream, 2_000_000) for stream in range(1, 6))])
    assert 5000 < tail.size < 6500  # 10M x 2 sf(r) = 5,760
    beyond = stats.kstest(tail, lambda x: 1 - stats.norm.sf(x) / stats.norm.sf(r))
    assert beyond.pvalue > 1e-3


def test_bad_sizes_are_refused():
    lib = native_library()
    for h, w in [(0, 5), (5, 0), (-1, 3), (70000, 4)]:
        assert lib.mm_fmix_noise(1, 0, 0, 0, h, w, 3.0, None, None, None) == -1
