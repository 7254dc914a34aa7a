#include "hil_lstm.h"

void hil_lstm_layer(const hil_lstm_layer_t *layer, const int8_t *x)
{
    const uint32_t n_in = layer->input_size, hidden = layer->hidden_size, len = layer->vector_len;
    int8_t *vectors = (int8_t *)layer->vectors, *cell = layer->cell;
    memset(vectors, 0, 2u * len);
    memset(cell, 0, hidden);
    for (uint32_t t = 0; t < layer->steps; t++) {
        int8_t *v = vectors + (t & 1u) * len, *next = vectors + ((t + 1u) & 1u) * len + n_in;
        const int8_t *xt = x + t * layer->x_step;
        for (uint32_t k = 0; k < n_in; k++)
            v[k] = xt[k * layer->x_row];
        int8_t *out = layer->h_out + t * layer->h_step;
        const int8_t *w = (const int8_t *)layer->weights;
        const int32_t *b = layer->bias;
        for (uint32_t j = 0; j < hidden; j++, b += 4) {
            int32_t a0 = b[0], a1 = b[1], a2 = b[2], a3 = b[3];
            /* two inputs per pass (len is even): one loop test per 8 MACs */
            for (const int8_t *e = v; e < v + len; e += 2, w += 8) {
                const int32_t e0 = e[0], e1 = e[1];
                a0 += e0 * w[0];
                a1 += e0 * w[1];
                a2 += e0 * w[2];
                a3 += e0 * w[3];
                a0 += e1 * w[4];
                a1 += e1 * w[5];
                a2 += e1 * w[6];
                a3 += e1 * w[7];
            }
            const int32_t h = hil_lstm_unit(layer, layer->tables, a0, a1, a2, a3, &cell[j]);
            next[j] = (int8_t)h;
            out[j] = (int8_t)h;
        }
    }
}

void hil_lstm_codes(const int8_t *h, uint32_t n, int32_t shift, uint32_t bits, uint8_t *codes)
{
    const int32_t half = 1 << (bits - 1);
    for (uint32_t j = 0; j < n; j++) {
        const int32_t v = hil_lstm_shift(h[j] + hil_lstm_rounding(shift), shift);
        codes[j] = (uint8_t)(hil_lstm_clamp(v, -half, half - 1) + half);
    }
}
