/*
 * The model interface: what a generated node encoder provides to the firmware.
 *
 * This is a contract with the C code generator in quant_models; keep the names unchanged.
 * Packed code layout: the k codes in order, each q bits, as one MSB-first bit stream (code 0
 * occupies the most significant q bits of byte 0), last byte zero-padded; this equals
 * numpy.packbits of the low q bits of each code.
 */
#ifndef HIL_MODEL_H
#define HIL_MODEL_H

#include <stdint.h>

typedef struct {
    uint8_t  hash[8];            /* first 8 bytes of the model's sha256 */
    uint16_t input_h, input_w;   /* one uint8 channel, row-major */
    uint16_t code_len;           /* k values */
    uint8_t  code_bits;          /* q in 1..8 */
    uint16_t code_bytes;         /* ceil(k*q/8) */
    uint32_t macs;               /* multiply-accumulates per inference */
} hil_model_info_t;

extern const hil_model_info_t hil_model_info;

/* 1 if the DSP kernels were compiled (hil_dsp.h), 0 for the portable ones. */
extern const uint8_t hil_model_dsp_kernels;

/* input: input_h*input_w uint8 pixels; packed_code: code_bytes bytes; returns 0 on success */
int hil_model_encode(const uint8_t *input, uint8_t *packed_code);

/* The same encoding, calling mark() after each stage (layer, input load, code packing), in the
 * order quant_models.codegen.model_stages lists them: the per-layer profile. */
typedef void (*hil_mark_t)(void);
int hil_model_encode_marked(const uint8_t *input, uint8_t *packed_code, hil_mark_t mark);

#endif /* HIL_MODEL_H */
