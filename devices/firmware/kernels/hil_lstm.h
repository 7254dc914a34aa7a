/*
 * LSTM node-encoder kernels: C99 (with GCC attributes, as hil_dsp.h), no allocation, no floating
 * point. The arithmetic is the spec in quant_models/intlstm.py (int32 accumulators, shifts
 * rounding half to even, inner int8 saturations, 256-entry activation tables), bit-exact with the
 * golden model (quant_models/golden.py). The C code generator (quant_models/codegen_lstm.py)
 * describes each layer in a static const hil_lstm_layer_t and lays its weights out in the order
 * the kernel reads.
 *
 * One call runs one layer over every time step (the per-layer profile times each call). Per step
 * t the kernel forms the vector v = [x_t; h_{t-1}] and, per unit j, the four gate accumulators
 * (i, f, g, o) as one block, then updates c[j] and h[j] at once: the accumulators never leave
 * registers. h_t goes into the other of two vectors (the one step t + 1 reads) and to h_out.
 *
 * Two kernels over the same layer description, as for the CNN encoders:
 *   - hil_lstm_layer (hil_lstm.c, any core): generic; int8 vectors; weights int8
 *     [unit][input][gate] over the vector padded to even length, biases int32 [unit][gate];
 *   - hil_lstm_layer_dsp (below, HIL_KERNELS_DSP from hil_dsp.h): inlined into one function per
 *     layer by the generated model, so sizes, shifts and addresses are compile-time constants.
 *     int16 vectors padded to even length; weights as int16 pairs in uint32 words, per unit its 4
 *     bias words, then per step of 8 inputs the 4 gates' 4 words (the fully connected layout of
 *     hil_dsp.h, whose 5-LDM + 16-SMLAD step it reuses), then per remaining word the 4 gates'
 *     words. Exact: |acc| < 2^24 (IntLstmEncoder.check) plus a rounding constant < 2^30.
 * Both add the rounding constant 2^(s-1) - 1 of each gate's shift s to its bias.
 */
#ifndef HIL_LSTM_H
#define HIL_LSTM_H

#include <stdint.h>
#include <string.h>

#include "hil_dsp.h"

#if defined(__ARM_FEATURE_SAT)
#include <arm_acle.h>
#endif

#define HIL_LSTM_TABLE 256u

/* Tables of a layer, each 256 entries indexed by the int8 argument + 128. */
enum { HIL_LSTM_SIGMOID_I, HIL_LSTM_SIGMOID_F, HIL_LSTM_TANH_G, HIL_LSTM_SIGMOID_O, HIL_LSTM_TANH_CELL };

typedef struct {
    const void *weights;     /* see above; DSP: the word stream */
    const int32_t *bias;     /* portable: [hidden][4] + rounding constants; DSP: NULL (in the stream) */
    const uint8_t *tables;   /* [5][256]: sigmoid i, f (uint8), tanh g (int8), sigmoid o, tanh c (int8) */
    void *vectors;           /* RAM, 4-byte aligned: two vectors of vector_len (int8; DSP: int16) */
    int8_t *cell;            /* RAM: hidden_size */
    int8_t *h_out;           /* h_t of unit j -> h_out[t * h_step + j] */
    uint32_t steps;          /* time steps W */
    uint32_t x_step, x_row;  /* x_t[k] = x[t * x_step + k * x_row] */
    uint32_t h_step;         /* 0 keeps only the last step's h */
    uint16_t input_size, hidden_size;
    uint16_t vector_len;     /* elements per vector: input + hidden rounded up to even */
    int8_t gate_shift[4];    /* accumulator -> pre-activation grid, -8..30 */
    int8_t cell_shift;       /* i * g -> cell grid, -8..30 */
} hil_lstm_layer_t;

/* Run one layer over all steps from h = c = 0 on the portable kernel; x: int8, see x_step, x_row. */
void hil_lstm_layer(const hil_lstm_layer_t *layer, const int8_t *x);

/* Offset-binary codes of h: clip(rne(h, shift), -2^(bits-1), 2^(bits-1) - 1) + 2^(bits-1),
   shift in -8..30. */
void hil_lstm_codes(const int8_t *h, uint32_t n, int32_t shift, uint32_t bits, uint8_t *codes);

/* ---- the element-wise step, shared by both kernels ---------------------------------------- */

#define HIL_LSTM_INLINE static inline __attribute__((always_inline))

HIL_LSTM_INLINE int32_t hil_lstm_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

HIL_LSTM_INLINE int32_t hil_lstm_sat8(int32_t v)
{
#if defined(__ARM_FEATURE_SAT)
    return __ssat(v, 8);  /* one SSAT (GCC folds a preceding ASR into it) */
#else
    return hil_lstm_clamp(v, -128, 127);
#endif
}

/* rne(v, s) for s in -8..30: when s > 0, v already carries 2^(s-1) - 1, so adding bit s of v
   before the arithmetic shift rounds half to even (derivation in quant_models/dsp_layout.py);
   when s <= 0, |v| * 2^-s must fit int32. */
HIL_LSTM_INLINE int32_t hil_lstm_shift(int32_t v, int32_t s)
{
    if (s > 0)
        return (v + ((v >> s) & 1)) >> s;
    return v * (1 << -s);
}

HIL_LSTM_INLINE int32_t hil_lstm_rounding(int32_t s)
{
    return s > 0 ? (1 << (s - 1)) - 1 : 0;
}

/* sat8(rne(v, s)); a left shift saturates any |v| > 256, so v is clamped first (no overflow). */
HIL_LSTM_INLINE int32_t hil_lstm_narrow(int32_t v, int32_t s)
{
    return hil_lstm_sat8(hil_lstm_shift(s < 0 ? hil_lstm_clamp(v, -256, 255) : v, s));
}

/* A table entry; int8 tables are stored as their two's-complement bytes. */
HIL_LSTM_INLINE int32_t hil_lstm_sigmoid(const uint8_t *tables, uint32_t which, int32_t a)
{
    return tables[which * HIL_LSTM_TABLE + 128u + (uint32_t)a];
}

HIL_LSTM_INLINE int32_t hil_lstm_tanh(const uint8_t *tables, uint32_t which, int32_t a)
{
    return (int8_t)tables[which * HIL_LSTM_TABLE + 128u + (uint32_t)a];
}

/* One unit's step from its four gate accumulators (rounding constants included) and the layer's
   tables t: updates *c, returns h. f, i, o are 0..255, g, c, tanh(c) -128..127: every product is
   below 2^15. */
HIL_LSTM_INLINE int32_t hil_lstm_unit(const hil_lstm_layer_t *layer, const uint8_t *t, int32_t acc_i, int32_t acc_f,
                                      int32_t acc_g, int32_t acc_o, int8_t *c)
{
    const int32_t i = hil_lstm_sigmoid(t, HIL_LSTM_SIGMOID_I, hil_lstm_narrow(acc_i, layer->gate_shift[0]));
    const int32_t f = hil_lstm_sigmoid(t, HIL_LSTM_SIGMOID_F, hil_lstm_narrow(acc_f, layer->gate_shift[1]));
    const int32_t g = hil_lstm_tanh(t, HIL_LSTM_TANH_G, hil_lstm_narrow(acc_g, layer->gate_shift[2]));
    const int32_t o = hil_lstm_sigmoid(t, HIL_LSTM_SIGMOID_O, hil_lstm_narrow(acc_o, layer->gate_shift[3]));
    const int32_t cs = layer->cell_shift;
    const int32_t kept = hil_lstm_narrow(f * *c + hil_lstm_rounding(8), 8);
    const int32_t added = hil_lstm_narrow(i * g + hil_lstm_rounding(cs), cs);
    const int32_t cell = hil_lstm_sat8(kept + added);
    *c = (int8_t)cell;
    return hil_lstm_narrow(o * hil_lstm_tanh(t, HIL_LSTM_TANH_CELL, cell) + hil_lstm_rounding(8), 8);
}

/* ---- the DSP kernel ------------------------------------------------------------------------ */

#if HIL_KERNELS_DSP

/* The four gate accumulators of one unit over the vector v (`words` int16 pairs), from its
   weight stream w; returns w advanced past the unit's words. */
HIL_LSTM_INLINE const uint32_t *hil_lstm_gates_dsp(const uint32_t *w, const int16_t *v, uint32_t words,
                                                   int32_t acc[4])
{
    const uint32_t *x = (const uint32_t *)(const void *)v;
    int32_t a0 = (int32_t)w[0], a1 = (int32_t)w[1], a2 = (int32_t)w[2], a3 = (int32_t)w[3];
    w += 4;
    const uint32_t steps = words / 4;
HIL_UNROLL(16)
    for (uint32_t n = 0; n < steps; n++)
        HIL_DSP_FC_STEP(x, w, a0, a1, a2, a3);
HIL_UNROLL(4)
    for (uint32_t r = 0; r < words % 4; r++, w += 4) {
        const uint32_t e = *x++;
        a0 = hil_smlad(e, w[0], a0);
        a1 = hil_smlad(e, w[1], a1);
        a2 = hil_smlad(e, w[2], a2);
        a3 = hil_smlad(e, w[3], a3);
    }
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
    return w;
}

/* Run one layer over all steps from h = c = 0; layer should be a static const description, so
   that the compiler folds its fields into the code. */
HIL_LSTM_INLINE void hil_lstm_layer_dsp(const hil_lstm_layer_t *layer, const int8_t *x)
{
    const uint32_t n_in = layer->input_size, hidden = layer->hidden_size, len = layer->vector_len;
    int16_t *vectors = (int16_t *)layer->vectors;
    int8_t *cell = layer->cell;
    memset(vectors, 0, 2u * len * sizeof *vectors);
    memset(cell, 0, hidden);
    for (uint32_t t = 0; t < layer->steps; t++) {
        int16_t *v = vectors + (t & 1u) * len, *next = vectors + ((t + 1u) & 1u) * len + n_in;
        const int8_t *xt = x + t * layer->x_step;
HIL_UNROLL(8)
        for (uint32_t k = 0; k < n_in; k++)
            v[k] = xt[k * layer->x_row];
        int8_t *out = layer->h_out + t * layer->h_step;
        const uint32_t *w = (const uint32_t *)layer->weights;
        for (uint32_t j = 0; j < hidden; j++) {
            int32_t acc[4];
            w = hil_lstm_gates_dsp(w, v, len / 2u, acc);
            const int32_t h = hil_lstm_unit(layer, layer->tables, acc[0], acc[1], acc[2], acc[3], &cell[j]);
            next[j] = (int16_t)h;
            out[j] = (int8_t)h;
        }
    }
}

#endif /* HIL_KERNELS_DSP */
#endif /* HIL_LSTM_H */
