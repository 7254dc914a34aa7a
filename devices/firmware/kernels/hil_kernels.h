/*
 * Integer kernels for node encoders: portable C99, no allocation, no floating point.
 *
 * Activations are uint8 codes (every hidden ReLU quantizer is unsigned, <= 8 bits), weights int8,
 * biases and accumulators int32. Requantization: out = clip(rne_shift(acc, shift), lo, hi) with
 * round-half-to-even, exactly as the golden model (quant_models/golden.py).
 */
#ifndef HIL_KERNELS_H
#define HIL_KERNELS_H

#include <stdint.h>

int32_t hil_requantize(int32_t acc, int shift, int32_t lo, int32_t hi);

/* in [in_ch][h][w] -> out [out_ch][h+2p-k+1][w+2p-k+1]; weight [out_ch][in_ch][k][k] */
void hil_conv2d_u8(const uint8_t *in, int in_ch, int h, int w,
                   const int8_t *weight, const int32_t *bias, int out_ch, int k, int pad,
                   int shift, int32_t lo, int32_t hi, uint8_t *out);

/* window == stride == size; trailing rows/cols dropped */
void hil_maxpool_u8(const uint8_t *in, int ch, int h, int w, int size, uint8_t *out);

/* weight [out_len][in_len] */
void hil_fc_u8(const uint8_t *in, int in_len, const int8_t *weight, const int32_t *bias,
               int out_len, int shift, int32_t lo, int32_t hi, uint8_t *out);

/* n codes of `bits` bits each -> MSB-first bit stream, last byte zero-padded */
void hil_pack_codes(const uint8_t *codes, int n, int bits, uint8_t *out);

#endif /* HIL_KERNELS_H */
