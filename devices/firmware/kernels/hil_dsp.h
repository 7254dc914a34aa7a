/*
 * Node-encoder kernels for Cortex-M cores with the DSP extension (M4, M7, M33, M55), header-only,
 * specialised per model by the C code generator (quant_models/codegen.py; the data layouts come
 * from quant_models/dsp_layout.py).
 *
 * Selected at build time: HIL_KERNELS_DSP is 1 when the compiler targets a core with the DSP
 * extension (__ARM_FEATURE_DSP: -mcpu=cortex-m4 and up) and 0 otherwise (Cortex-M0/M3: the
 * generated model then calls the portable kernels of hil_kernels.c). -DHIL_KERNELS_PORTABLE
 * forces the portable path; -DHIL_DSP_EMULATE builds this path for any CPU (the host tests), with
 * the few DSP instructions below written in C with the instructions' semantics.
 *
 * Data layout (chosen offline by the generator, so the inner loops read memory in order):
 *   - activations are int16 "frames": rows x columns x channel stride (HWC), the channel stride
 *     rounded up to even (the padding channel has zero weights downstream), with a zero border
 *     as wide as the consuming convolution's padding: border cells are never written, so no
 *     kernel tap is bounds-checked;
 *   - a convolution handles its output pixels in groups of 4 (a 2x2 pool window, or 4 pixels in
 *     raster order; a short group repeats a pixel, which only recomputes and rewrites the same
 *     value). Per group it copies the 4 receptive fields into an im2col buffer of words
 *     [tap pair][pixel] (a kernel row's run of taps x channels as whole words; with an odd run,
 *     the rows' last taps are paired with each other). A pair of output channels has a record
 *     of [tap pair][channel] weight words, then its two bias words, so one tap pair costs one
 *     LDRD of 2 pixels' taps, one LDRD of 2 channels' weights, four SMLAD, one LDRD, four SMLAD:
 *     11 instructions per 16 MACs (as QEMU counts them: an LDRD or LDM is one instruction);
 *   - a fully connected layer reads 8 inputs (4 words, one LDM) per step and, for each of 4
 *     outputs, their 4 weight words (one LDM) and four SMLAD: 21 instructions per 32 MACs.
 *
 * Exactness (the golden model, quant_models/golden.py): products and sums are exact in int32
 * (SMLAD adds modulo 2^32, and the generator proves every sum fits int32 from the weights and
 * the input ranges, or does not use these kernels). Max-pooling takes the max of the
 * accumulators before the bias and requantisation, which are non-decreasing, so the result is
 * the max of the requantised values. The bias words carry bias + 2^(shift-1) - 1, so that
 * hil_dsp_requant's add-bit-then-shift rounds half to even (derivation in
 * quant_models/dsp_layout.py); the clip to [lo, hi] compiles to one USAT/SSAT (with the shift
 * folded in) when it is a saturation.
 *
 * Why inline assembly for the loads: with __smlad alone, GCC 12 hoists the im2col loads out of
 * the channel loop and spills the eight accumulators; an LDRD/LDM whose pointer it updates
 * keeps the loads in the loop, and the __smlad/__smuad intrinsics stay intrinsics.
 */
#ifndef HIL_DSP_H
#define HIL_DSP_H

#include <stdint.h>
#include <string.h>

#if defined(HIL_KERNELS_PORTABLE)
#define HIL_KERNELS_DSP 0
#elif defined(HIL_DSP_EMULATE)
#define HIL_KERNELS_DSP 1
#define HIL_DSP_NATIVE 0
#elif defined(__ARM_FEATURE_DSP)
#define HIL_KERNELS_DSP 1
#define HIL_DSP_NATIVE 1
#else
#define HIL_KERNELS_DSP 0
#endif

#if HIL_KERNELS_DSP

#define HIL_INLINE static inline __attribute__((always_inline))
#define HIL_PRAGMA(x) _Pragma(#x)

#if HIL_DSP_NATIVE
#include <arm_acle.h>

#define hil_smuad(a, b) __smuad((int32_t)(a), (int32_t)(b))
#define hil_smlad(a, b, acc) __smlad((int32_t)(a), (int32_t)(b), (acc))
/* Two words from p, p += 2 words: one LDRD. */
#define HIL_LD2(p, a, b) __asm__("ldrd %0, %1, [%2], #8" : "=r"(a), "=r"(b), "+r"(p) : : "memory")
/* Four words from p, p += 4 words: one LDM into a, b, c, d, which must be variables held in
   ascending registers (declared with HIL_PINNED). */
#define HIL_LD4(p, a, b, c, d) \
    __asm__("ldmia %4!, {%0, %1, %2, %3}" : "=r"(a), "=r"(b), "=r"(c), "=r"(d), "+r"(p) : : "memory")
/* A uint32_t variable held in register r (for HIL_LD4's register list). The kernels pin r4-r11,
   which needs the frame pointer (r7 in Thumb code) omitted, as -O2 does. */
#define HIL_PINNED(name, r) register uint32_t name __asm__(#r)
/* Unroll the next loop n times: constant trip counts <= n unroll completely. */
#define HIL_UNROLL(n) HIL_PRAGMA(GCC unroll n)

#else /* HIL_DSP_EMULATE: the same operations in C */

/* SMUAD: the two signed 16x16 products of the halfwords, added modulo 2^32. */
static inline int32_t hil_smuad(uint32_t a, uint32_t b)
{
    uint32_t lo = (uint32_t)((int32_t)(int16_t)(a & 0xffffu) * (int16_t)(b & 0xffffu));
    uint32_t hi = (uint32_t)((int32_t)(int16_t)(a >> 16) * (int16_t)(b >> 16));
    return (int32_t)(lo + hi);
}

/* SMLAD: acc + SMUAD, modulo 2^32. */
static inline int32_t hil_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)hil_smuad(a, b));
}

#define HIL_LD2(p, a, b) do { memcpy(&(a), (p), 4); memcpy(&(b), (p) + 1, 4); (p) += 2; } while (0)
#define HIL_LD4(p, a, b, c, d) do { HIL_LD2(p, a, b); HIL_LD2(p, c, d); } while (0)
#define HIL_PINNED(name, r) uint32_t name
#define HIL_UNROLL(n)  /* the host build checks the arithmetic, not the speed: compile faster */

#endif /* HIL_DSP_NATIVE */

/* Two int16 at p (any alignment; LDR allows unaligned words on ARMv7-M) as one word. */
HIL_INLINE uint32_t hil_load32(const int16_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* lo in the low halfword, hi in the high one (one PKHBT). */
HIL_INLINE uint32_t hil_pack16(int16_t lo, int16_t hi)
{
    return (uint32_t)(uint16_t)lo | ((uint32_t)(uint16_t)hi << 16);
}

HIL_INLINE int32_t hil_max32(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

/* v = accumulator + bias + 2^(shift-1) - 1 (the bias words carry the constant). Adding bit
   `shift` of v before the arithmetic shift rounds the accumulator half to even. */
HIL_INLINE int32_t hil_dsp_requant(int32_t v, int32_t shift, int32_t lo, int32_t hi)
{
    if (shift > 0) {
        v += (v >> shift) & 1;
        v >>= shift;
    } else if (shift < 0) {
        v = (int32_t)((uint32_t)v << -shift);
    }
    return v < lo ? lo : v > hi ? hi : v;
}

/* The model input (uint8 pixels, row-major) into the interior of a one-channel frame. */
HIL_INLINE void hil_dsp_load_input(const uint8_t *in, int16_t *frame, uint32_t h, uint32_t w, uint32_t pad)
{
    const uint32_t stride = w + 2 * pad;
    int16_t *row = frame + pad * stride + pad;
    for (uint32_t y = 0; y < h; y++, row += stride, in += w) {
        uint32_t x = 0;
HIL_UNROLL(16)
        for (; x + 1 < w; x += 2) {  /* two pixels per (possibly unaligned) word store */
            const uint32_t pair = in[x] | ((uint32_t)in[x + 1] << 16);
            memcpy(row + x, &pair, 4);
        }
        if (w & 1)
            row[w - 1] = in[w - 1];
    }
}

typedef struct {
    const uint32_t *weights;  /* per channel pair: kp x {c0, c1} words, then bias(c0), bias(c1) */
    const uint32_t *origins;  /* per slot: input frame offset of its receptive field (elements) */
    const uint32_t *dests;    /* per window (pooled) or per slot: output frame offset (elements) */
    uint32_t windows;         /* pool windows, or groups of 4 pixels when not pooled */
    uint32_t window_groups;   /* groups of 4 slots per window (1 when not pooled) */
    uint32_t pooled;          /* 1: one output per window (the max); 0: one output per slot */
    uint32_t k;               /* kernel rows */
    uint32_t run;             /* elements in one kernel row of a receptive field (k x channel stride) */
    uint32_t row_stride;      /* input frame row, elements */
    uint32_t kp;              /* tap pairs per receptive field */
    uint32_t pairs;           /* output channel pairs */
    int32_t shift, lo, hi;    /* requantisation */
} hil_dsp_conv_t;

/* The receptive fields of one group's 4 slots as words [tap pair][slot]; returns the end. */
HIL_INLINE uint32_t *hil_dsp_im2col(const hil_dsp_conv_t *c, const int16_t *in, const uint32_t *origin,
                                    uint32_t *col)
{
    const int16_t *s0 = in + origin[0], *s1 = in + origin[1], *s2 = in + origin[2], *s3 = in + origin[3];
    const uint32_t words = c->run / 2;
HIL_UNROLL(8)
    for (uint32_t r = 0; r < c->k; r++) {
        const uint32_t row = r * c->row_stride;
HIL_UNROLL(16)
        for (uint32_t j = 0; j < words; j++, col += 4) {
            col[0] = hil_load32(s0 + row + 2 * j);
            col[1] = hil_load32(s1 + row + 2 * j);
            col[2] = hil_load32(s2 + row + 2 * j);
            col[3] = hil_load32(s3 + row + 2 * j);
        }
    }
    if (c->run & 1) {
        /* An odd run: the last taps of rows r and r + 1 share a word (the last row's with 0). */
HIL_UNROLL(8)
        for (uint32_t r = 0; r < c->k; r += 2, col += 4) {
            const uint32_t a = r * c->row_stride + c->run - 1, b = a + c->row_stride;
            const int last = r + 1 >= c->k;
            col[0] = hil_pack16(s0[a], last ? 0 : s0[b]);
            col[1] = hil_pack16(s1[a], last ? 0 : s1[b]);
            col[2] = hil_pack16(s2[a], last ? 0 : s2[b]);
            col[3] = hil_pack16(s3[a], last ? 0 : s3[b]);
        }
    }
    return col;
}

/* a[4c + s] = dot product of slot s's receptive field (col) with channel c's weights (w). */
HIL_INLINE void hil_dsp_mac_2x4(const uint32_t *x, const uint32_t *w, uint32_t kp, int32_t a[8])
{
    uint32_t x0, x1, w0, w1;
    HIL_LD2(x, x0, x1);
    HIL_LD2(w, w0, w1);
    int32_t a0 = hil_smuad(x0, w0), a1 = hil_smuad(x1, w0), a4 = hil_smuad(x0, w1), a5 = hil_smuad(x1, w1);
    HIL_LD2(x, x0, x1);
    int32_t a2 = hil_smuad(x0, w0), a3 = hil_smuad(x1, w0), a6 = hil_smuad(x0, w1), a7 = hil_smuad(x1, w1);
HIL_UNROLL(16)
    for (uint32_t i = 1; i < kp; i++) {
        HIL_LD2(x, x0, x1);
        HIL_LD2(w, w0, w1);
        a0 = hil_smlad(x0, w0, a0);
        a1 = hil_smlad(x1, w0, a1);
        a4 = hil_smlad(x0, w1, a4);
        a5 = hil_smlad(x1, w1, a5);
        HIL_LD2(x, x0, x1);
        a2 = hil_smlad(x0, w0, a2);
        a3 = hil_smlad(x1, w0, a3);
        a6 = hil_smlad(x0, w1, a6);
        a7 = hil_smlad(x1, w1, a7);
    }
    a[0] = a0; a[1] = a1; a[2] = a2; a[3] = a3;
    a[4] = a4; a[5] = a5; a[6] = a6; a[7] = a7;
}

/* The two output channels' values for one slot (or pool window), requantised, as one word. */
HIL_INLINE uint32_t hil_dsp_outputs(const hil_dsp_conv_t *c, int32_t acc0, int32_t acc1, uint32_t b0, uint32_t b1)
{
    return hil_pack16((int16_t)hil_dsp_requant(acc0 + (int32_t)b0, c->shift, c->lo, c->hi),
                      (int16_t)hil_dsp_requant(acc1 + (int32_t)b1, c->shift, c->lo, c->hi));
}

/* Convolution (stride 1, zero padding from the input frame's border), then requantisation,
   with the max-pool that follows it fused when c->pooled. */
HIL_INLINE void hil_dsp_conv(const hil_dsp_conv_t *c, const int16_t *in, int16_t *out, uint32_t *col)
{
    const uint32_t *origin = c->origins, *dest = c->dests;
    const uint32_t group_words = 4 * c->kp;
    for (uint32_t win = 0; win < c->windows; win++) {
        uint32_t *end = col;
        for (uint32_t g = 0; g < c->window_groups; g++, origin += 4)
            end = hil_dsp_im2col(c, in, origin, end);
        const uint32_t *w = c->weights;
        uint32_t b0, b1;
        if (c->pooled) {
            int16_t *o = out + *dest++;
            for (uint32_t p = 0; p < c->pairs; p++, o += 2) {
                int32_t m0 = 0, m1 = 0;
                for (uint32_t g = 0; g < c->window_groups; g++) {
                    int32_t a[8];
                    hil_dsp_mac_2x4(col + g * group_words, w, c->kp, a);
                    const int32_t g0 = hil_max32(hil_max32(a[0], a[1]), hil_max32(a[2], a[3]));
                    const int32_t g1 = hil_max32(hil_max32(a[4], a[5]), hil_max32(a[6], a[7]));
                    m0 = g == 0 ? g0 : hil_max32(m0, g0);
                    m1 = g == 0 ? g1 : hil_max32(m1, g1);
                }
                w += 2 * c->kp;
                HIL_LD2(w, b0, b1);
                const uint32_t both = hil_dsp_outputs(c, m0, m1, b0, b1);
                memcpy(o, &both, 4);
            }
        } else {
            int16_t *o0 = out + dest[0], *o1 = out + dest[1], *o2 = out + dest[2], *o3 = out + dest[3];
            dest += 4;
            for (uint32_t p = 0; p < c->pairs; p++, o0 += 2, o1 += 2, o2 += 2, o3 += 2) {
                int32_t a[8];
                hil_dsp_mac_2x4(col, w, c->kp, a);
                w += 2 * c->kp;
                HIL_LD2(w, b0, b1);
                uint32_t both = hil_dsp_outputs(c, a[0], a[4], b0, b1);
                memcpy(o0, &both, 4);
                both = hil_dsp_outputs(c, a[1], a[5], b0, b1);
                memcpy(o1, &both, 4);
                both = hil_dsp_outputs(c, a[2], a[6], b0, b1);
                memcpy(o2, &both, 4);
                both = hil_dsp_outputs(c, a[3], a[7], b0, b1);
                memcpy(o3, &both, 4);
            }
        }
    }
}

/* Max-pool (window == stride == size, trailing rows/columns dropped) between two frames. */
HIL_INLINE void hil_dsp_maxpool(const int16_t *in, int16_t *out, uint32_t oh, uint32_t ow, uint32_t channels,
                                uint32_t in_row, uint32_t out_row, uint32_t out_first, uint32_t size)
{
    for (uint32_t y = 0; y < oh; y++) {
        for (uint32_t x = 0; x < ow; x++) {
            const int16_t *win = in + (y * size * in_row) + x * size * channels;
            int16_t *o = out + out_first + y * out_row + x * channels;
            for (uint32_t ch = 0; ch < channels; ch++) {
                int16_t m = win[ch];
                for (uint32_t i = 0; i < size; i++)
                    for (uint32_t j = 0; j < size; j++) {
                        const int16_t v = win[i * in_row + j * channels + ch];
                        if (v > m) m = v;
                    }
                o[ch] = m;
            }
        }
    }
}

typedef struct {
    const uint32_t *weights;  /* per block of 4 outputs: 4 bias words, then per step 4 x 4 words */
    uint32_t blocks;          /* blocks of 4 outputs */
    uint32_t steps;           /* steps of 8 inputs (4 words) */
    uint32_t codes;           /* 1: writes uint8 codes; 0: int16 activations */
    int32_t shift, lo, hi;    /* requantisation */
} hil_dsp_fc_t;

/* One step: 8 inputs, 4 outputs. Native: 5 LDM + 16 SMLAD. */
#define HIL_DSP_FC_STEP(x, w, a0, a1, a2, a3)                                          \
    do {                                                                               \
        HIL_PINNED(x0, r8); HIL_PINNED(x1, r9); HIL_PINNED(x2, r10); HIL_PINNED(x3, r11);     \
        HIL_PINNED(w0, r4); HIL_PINNED(w1, r5); HIL_PINNED(w2, r6); HIL_PINNED(w3, r7);       \
        HIL_LD4(x, x0, x1, x2, x3);                                                    \
        HIL_LD4(w, w0, w1, w2, w3);                                                    \
        a0 = hil_smlad(x3, w3, hil_smlad(x2, w2, hil_smlad(x1, w1, hil_smlad(x0, w0, a0)))); \
        HIL_LD4(w, w0, w1, w2, w3);                                                    \
        a1 = hil_smlad(x3, w3, hil_smlad(x2, w2, hil_smlad(x1, w1, hil_smlad(x0, w0, a1)))); \
        HIL_LD4(w, w0, w1, w2, w3);                                                    \
        a2 = hil_smlad(x3, w3, hil_smlad(x2, w2, hil_smlad(x1, w1, hil_smlad(x0, w0, a2)))); \
        HIL_LD4(w, w0, w1, w2, w3);                                                    \
        a3 = hil_smlad(x3, w3, hil_smlad(x2, w2, hil_smlad(x1, w1, hil_smlad(x0, w0, a3)))); \
    } while (0)

/* Fully connected on an int16 frame (positions as the generator permuted the weights). */
HIL_INLINE void hil_dsp_fc(const hil_dsp_fc_t *f, const int16_t *in, void *out)
{
    const uint32_t *w = f->weights;
    uint8_t *codes = (uint8_t *)out;
    int16_t *acts = (int16_t *)out;
    for (uint32_t b = 0; b < f->blocks; b++) {
        const uint32_t *x = (const uint32_t *)(const void *)in;
        int32_t a0 = (int32_t)w[0], a1 = (int32_t)w[1], a2 = (int32_t)w[2], a3 = (int32_t)w[3];
        w += 4;
        uint32_t n = f->steps;
        for (; n >= 4; n -= 4) {
            HIL_DSP_FC_STEP(x, w, a0, a1, a2, a3);
            HIL_DSP_FC_STEP(x, w, a0, a1, a2, a3);
            HIL_DSP_FC_STEP(x, w, a0, a1, a2, a3);
            HIL_DSP_FC_STEP(x, w, a0, a1, a2, a3);
        }
        for (; n > 0; n--)
            HIL_DSP_FC_STEP(x, w, a0, a1, a2, a3);
        const int32_t v0 = hil_dsp_requant(a0, f->shift, f->lo, f->hi);
        const int32_t v1 = hil_dsp_requant(a1, f->shift, f->lo, f->hi);
        const int32_t v2 = hil_dsp_requant(a2, f->shift, f->lo, f->hi);
        const int32_t v3 = hil_dsp_requant(a3, f->shift, f->lo, f->hi);
        if (f->codes) {
            codes[0] = (uint8_t)v0; codes[1] = (uint8_t)v1; codes[2] = (uint8_t)v2; codes[3] = (uint8_t)v3;
            codes += 4;
        } else {
            acts[0] = (int16_t)v0; acts[1] = (int16_t)v1; acts[2] = (int16_t)v2; acts[3] = (int16_t)v3;
            acts += 4;
        }
    }
}

#endif /* HIL_KERNELS_DSP */
#endif /* HIL_DSP_H */
