#include "hil_kernels.h"

int32_t hil_requantize(int32_t acc, int shift, int32_t lo, int32_t hi)
{
    int64_t v;
    if (shift <= 0) {
        v = (int64_t)acc * ((int64_t)1 << -shift);
    } else {
        /* >> on a negative signed value is arithmetic in gcc and clang (floor division). */
        int64_t a = acc;
        int64_t floor = a >> shift;
        int64_t rem = a - floor * ((int64_t)1 << shift);
        int64_t half = (int64_t)1 << (shift - 1);
        v = floor + ((rem > half) || (rem == half && (floor & 1)));
    }
    if (v < lo) return lo;
    if (v > hi) return hi;
    return (int32_t)v;
}

void hil_conv2d_u8(const uint8_t *in, int in_ch, int h, int w,
                   const int8_t *weight, const int32_t *bias, int out_ch, int k, int pad,
                   int shift, int32_t lo, int32_t hi, uint8_t *out)
{
    const int oh = h + 2 * pad - k + 1, ow = w + 2 * pad - k + 1;
    for (int o = 0; o < out_ch; o++) {
        for (int y = 0; y < oh; y++) {
            for (int x = 0; x < ow; x++) {
                int32_t acc = bias[o];
                for (int c = 0; c < in_ch; c++) {
                    const uint8_t *plane = in + c * h * w;
                    const int8_t *kern = weight + ((o * in_ch + c) * k) * k;
                    for (int i = 0; i < k; i++) {
                        const int iy = y + i - pad;
                        if (iy < 0 || iy >= h) continue;
                        for (int j = 0; j < k; j++) {
                            const int ix = x + j - pad;
                            if (ix < 0 || ix >= w) continue;
                            acc += (int32_t)plane[iy * w + ix] * kern[i * k + j];
                        }
                    }
                }
                out[(o * oh + y) * ow + x] = (uint8_t)hil_requantize(acc, shift, lo, hi);
            }
        }
    }
}

void hil_maxpool_u8(const uint8_t *in, int ch, int h, int w, int size, uint8_t *out)
{
    const int oh = h / size, ow = w / size;
    for (int c = 0; c < ch; c++) {
        for (int y = 0; y < oh; y++) {
            for (int x = 0; x < ow; x++) {
                uint8_t m = 0;
                for (int i = 0; i < size; i++)
                    for (int j = 0; j < size; j++) {
                        const uint8_t v = in[(c * h + y * size + i) * w + x * size + j];
                        if (v > m) m = v;
                    }
                out[(c * oh + y) * ow + x] = m;
            }
        }
    }
}

void hil_fc_u8(const uint8_t *in, int in_len, const int8_t *weight, const int32_t *bias,
               int out_len, int shift, int32_t lo, int32_t hi, uint8_t *out)
{
    for (int o = 0; o < out_len; o++) {
        const int8_t *row = weight + o * in_len;
        int32_t acc = bias[o];
        for (int i = 0; i < in_len; i++)
            acc += (int32_t)in[i] * row[i];
        out[o] = (uint8_t)hil_requantize(acc, shift, lo, hi);
    }
}

void hil_pack_codes(const uint8_t *codes, int n, int bits, uint8_t *out)
{
    const int nbytes = (n * bits + 7) / 8;
    for (int i = 0; i < nbytes; i++) out[i] = 0;
    int pos = 0; /* bit position in the stream, 0 = MSB of out[0] */
    for (int i = 0; i < n; i++) {
        for (int b = bits - 1; b >= 0; b--, pos++) {
            if ((codes[i] >> b) & 1u)
                out[pos >> 3] |= (uint8_t)(0x80u >> (pos & 7));
        }
    }
}
