/*
 * Node firmware main loop: announce HELLO, then answer HELLO / PING / INFER requests forever.
 *
 * Build-time settings (harness/targets/mcu/firmware.py passes them):
 *   HIL_NODE_ID           node id reported in HELLO (default 0)
 *   HIL_MAX_INPUT_BYTES   largest INFER payload the receive buffer holds (default 4096)
 *   HIL_MAX_CODE_BYTES    largest packed code of one sample (default 256)
 *   HIL_MAX_BATCH         most samples one INFER frame may carry (default 16)
 *   HIL_MARKER_GAP_US     least time the marker stays low between two inferences (default 50)
 *
 * An INFER frame carries one or more inputs back to back; each is encoded and timed on its own,
 * and one INFER_RESULT returns every sample's ticks and code, so the link's framing, CRC and
 * round trip are paid once per batch rather than once per sample.
 *
 * Energy windows: the board's marker pin (board_marker) is high while each INFER sample is
 * encoded and timed, and low otherwise (also during PROFILE, which is not a benchmarked
 * inference). Between two samples of a batch it stays low for HIL_MARKER_GAP_US, so a meter
 * sampling at 100 kS/s (PPK2) sees 5 low samples and never merges two windows. The marker and
 * the gap lie outside the timed code: the ticks are the same with or without a meter.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "cortexm/cortexm.h"
#include "hil_model.h"
#include "protocol.h"

#ifndef HIL_NODE_ID
#define HIL_NODE_ID 0
#endif
#ifndef HIL_MAX_INPUT_BYTES
#define HIL_MAX_INPUT_BYTES 4096
#endif
#ifndef HIL_MAX_CODE_BYTES
#define HIL_MAX_CODE_BYTES 256
#endif
#ifndef HIL_MAX_BATCH
#define HIL_MAX_BATCH 16
#endif
#ifndef HIL_MARKER_GAP_US
#define HIL_MARKER_GAP_US 50u
#endif
#if HIL_MAX_BATCH < 1 || HIL_MAX_BATCH > 255
#error "HIL_MAX_BATCH must be 1..255 (it travels as a byte)"
#endif

/* Most profile marks (layers) a PROFILE reply carries. */
#define HIL_MAX_MARKS 64u
/* A ULEB128-coded u64 takes at most 10 bytes. */
#define HIL_ULEB128_MAX_BYTES 10u

/* COBS adds one byte per 254 plus one; the body adds header and CRC. */
#define HIL_MAX_BODY_BYTES (HIL_FRAME_HEADER_BYTES + HIL_MAX_INPUT_BYTES + HIL_FRAME_CRC_BYTES)
#define HIL_RX_BUFFER_BYTES (HIL_MAX_BODY_BYTES + HIL_MAX_BODY_BYTES / 254 + 2)

#define HIL_HELLO_FIXED_BYTES 50u
#define HIL_BOARD_NAME_MAX 32u

/* Absolute symbols from cortexm/sections.ld: their addresses are the values. */
extern const uint8_t __flash_used[], __ram_used[], __stack_size[];

static uint8_t rx_buffer[HIL_RX_BUFFER_BYTES];
static uint8_t code_buffer[HIL_MAX_BATCH * HIL_MAX_CODE_BYTES];
/* A reply's first part: a count byte and one ULEB128 tick count per sample (or per mark). */
static uint8_t ticks_buffer[1u + (HIL_MAX_BATCH > HIL_MAX_MARKS ? HIL_MAX_BATCH : HIL_MAX_MARKS) * HIL_ULEB128_MAX_BYTES];
static uint64_t marks[HIL_MAX_MARKS];
static unsigned mark_count;

static void send_hello(uint16_t seq)
{
    uint8_t payload[HIL_HELLO_FIXED_BYTES + 1u + HIL_BOARD_NAME_MAX];
    const hil_model_info_t *m = &hil_model_info;
    const char *name = board_name();
    size_t name_len = strlen(name);
    if (name_len > HIL_BOARD_NAME_MAX) {
        name_len = HIL_BOARD_NAME_MAX;
    }

    uint8_t *p = payload;
    p = hil_put_u8(p, HIL_PROTOCOL_VERSION);
    p = hil_put_u8(p, HIL_NODE_ID);
    memcpy(p, m->hash, sizeof m->hash);
    p += sizeof m->hash;
    p = hil_put_u16(p, m->input_h);
    p = hil_put_u16(p, m->input_w);
    p = hil_put_u16(p, m->code_len);
    p = hil_put_u8(p, m->code_bits);
    p = hil_put_u16(p, m->code_bytes);
    p = hil_put_u32(p, m->macs);
    p = hil_put_u32(p, board_clock_hz());
    p = hil_put_u32(p, board_timer_hz());
    p = hil_put_u8(p, board_timer_kind());
    p = hil_put_u32(p, (uint32_t)(uintptr_t)__flash_used);
    p = hil_put_u32(p, (uint32_t)(uintptr_t)__ram_used);
    p = hil_put_u32(p, (uint32_t)(uintptr_t)__stack_size);
    p = hil_put_u32(p, HIL_MAX_INPUT_BYTES);
    p = hil_put_u8(p, HIL_MAX_BATCH);
    p = hil_put_u8(p, hil_model_dsp_kernels);
    p = hil_put_u8(p, (uint8_t)name_len);
    memcpy(p, name, name_len);
    p += name_len;
    hil_send_frame(HIL_MSG_HELLO, seq, payload, (size_t)(p - payload), NULL, 0);
}

static int model_fits(uint16_t seq)
{
    const hil_model_info_t *m = &hil_model_info;
    if ((size_t)m->input_h * m->input_w > HIL_MAX_INPUT_BYTES || m->code_bytes > HIL_MAX_CODE_BYTES) {
        hil_send_error(seq, HIL_ERR_MODEL_TOO_LARGE,
                       "model input or code exceeds HIL_MAX_INPUT_BYTES/HIL_MAX_CODE_BYTES");
        return 0;
    }
    return 1;
}

static void handle_infer(const hil_frame_t *req)
{
    const hil_model_info_t *m = &hil_model_info;
    size_t input_len = (size_t)m->input_h * m->input_w;
    if (!model_fits(req->seq)) {
        return;
    }
    size_t count = req->payload_len / input_len;
    if (count == 0 || count > HIL_MAX_BATCH || count * input_len != req->payload_len) {
        hil_send_error(req->seq, HIL_ERR_BAD_LENGTH,
                       "INFER payload is not 1..HIL_MAX_BATCH inputs of input_h*input_w bytes");
        return;
    }

    uint8_t *p = hil_put_u8(ticks_buffer, (uint8_t)count);
    for (size_t i = 0; i < count; i++) {
        if (i > 0) {
            hil_delay_cycles(board_clock_hz() / 1000000u * HIL_MARKER_GAP_US);
        }
        /* The ticks include a few instructions of timer start/read and call overhead. */
        board_marker(1);
        board_timer_start();
        int status = hil_model_encode(req->payload + i * input_len, code_buffer + i * m->code_bytes);
        uint64_t ticks = board_timer_read();
        board_timer_stop();
        board_marker(0);
        if (status != 0) {
            hil_send_error(req->seq, HIL_ERR_MODEL_FAILED, "hil_model_encode failed");
            return;
        }
        p = hil_put_uleb128(p, ticks);
    }
    hil_send_frame(HIL_MSG_INFER_RESULT, req->seq, ticks_buffer, (size_t)(p - ticks_buffer), code_buffer,
                   count * m->code_bytes);
}

static void mark(void)
{
    if (mark_count < HIL_MAX_MARKS) {
        marks[mark_count++] = board_timer_read();
    }
}

/* One inference timed layer by layer: the ticks of each stage hil_model_encode_marked marks. */
static void handle_profile(const hil_frame_t *req)
{
    const hil_model_info_t *m = &hil_model_info;
    if (!model_fits(req->seq)) {
        return;
    }
    if (req->payload_len != (size_t)m->input_h * m->input_w) {
        hil_send_error(req->seq, HIL_ERR_BAD_LENGTH, "PROFILE payload length != input_h*input_w");
        return;
    }
    mark_count = 0;
    board_timer_start();
    int status = hil_model_encode_marked(req->payload, code_buffer, mark);
    board_timer_stop();
    if (status != 0) {
        hil_send_error(req->seq, HIL_ERR_MODEL_FAILED, "hil_model_encode_marked failed");
        return;
    }
    uint8_t *p = hil_put_u8(ticks_buffer, (uint8_t)mark_count);
    uint64_t previous = 0;
    for (unsigned i = 0; i < mark_count; i++) {
        p = hil_put_uleb128(p, marks[i] - previous);
        previous = marks[i];
    }
    hil_send_frame(HIL_MSG_PROFILE_RESULT, req->seq, ticks_buffer, (size_t)(p - ticks_buffer), code_buffer,
                   m->code_bytes);
}

int main(void)
{
    board_init();
    /* Unsolicited banner: tells the host the UART is up and requests will not be dropped. */
    send_hello(0);

    for (;;) {
        hil_frame_t req;
        int status = hil_receive_frame(rx_buffer, sizeof rx_buffer, &req);
        if (status != 0) {
            hil_send_error(req.seq, (uint16_t)status,
                           status == HIL_ERR_FRAME_TOO_LONG ? "frame too long" : "bad frame");
            continue;
        }
        switch (req.type) {
        case HIL_MSG_HELLO_REQUEST:
            send_hello(req.seq);
            break;
        case HIL_MSG_PING:
            hil_send_frame(HIL_MSG_PONG, req.seq, req.payload, req.payload_len, NULL, 0);
            break;
        case HIL_MSG_INFER:
            handle_infer(&req);
            break;
        case HIL_MSG_PROFILE:
            handle_profile(&req);
            break;
        default:
            hil_send_error(req.seq, HIL_ERR_UNKNOWN_TYPE, "unknown message type");
            break;
        }
    }
}
