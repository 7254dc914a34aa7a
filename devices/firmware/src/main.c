/*
 * Node firmware main loop: announce HELLO, then answer HELLO / PING / INFER requests forever.
 *
 * Build-time settings (harness/targets/mcu/firmware.py passes the first two):
 *   HIL_NODE_ID           node id reported in HELLO (default 0)
 *   HIL_MAX_INPUT_BYTES   largest model input the receive buffer holds (default 4096)
 *   HIL_MAX_CODE_BYTES    largest packed code the reply buffer holds (default 256)
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "board.h"
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

/* COBS adds one byte per 254 plus one; the body adds header and CRC. */
#define HIL_MAX_BODY_BYTES (HIL_FRAME_HEADER_BYTES + HIL_MAX_INPUT_BYTES + HIL_FRAME_CRC_BYTES)
#define HIL_RX_BUFFER_BYTES (HIL_MAX_BODY_BYTES + HIL_MAX_BODY_BYTES / 254 + 2)

#define HIL_HELLO_FIXED_BYTES 48u
#define HIL_BOARD_NAME_MAX 32u

/* Absolute symbols from cortexm/sections.ld: their addresses are the values. */
extern const uint8_t __flash_used[], __ram_used[], __stack_size[];

static uint8_t rx_buffer[HIL_RX_BUFFER_BYTES];
static uint8_t code_buffer[HIL_MAX_CODE_BYTES];

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
    p = hil_put_u8(p, (uint8_t)name_len);
    memcpy(p, name, name_len);
    p += name_len;
    hil_send_frame(HIL_MSG_HELLO, seq, payload, (size_t)(p - payload), NULL, 0);
}

static void handle_infer(const hil_frame_t *req)
{
    const hil_model_info_t *m = &hil_model_info;
    size_t input_len = (size_t)m->input_h * m->input_w;
    if (input_len > HIL_MAX_INPUT_BYTES || m->code_bytes > HIL_MAX_CODE_BYTES) {
        hil_send_error(req->seq, HIL_ERR_MODEL_TOO_LARGE,
                       "model input or code exceeds HIL_MAX_INPUT_BYTES/HIL_MAX_CODE_BYTES");
        return;
    }
    if (req->payload_len != input_len) {
        hil_send_error(req->seq, HIL_ERR_BAD_LENGTH, "INFER payload length != input_h*input_w");
        return;
    }

    /* The ticks include a few instructions of timer start/read and call overhead. */
    board_timer_start();
    int status = hil_model_encode(req->payload, code_buffer);
    uint64_t ticks = board_timer_read();

    if (status != 0) {
        hil_send_error(req->seq, HIL_ERR_MODEL_FAILED, "hil_model_encode failed");
        return;
    }
    uint8_t ticks_bytes[8];
    hil_put_u64(ticks_bytes, ticks);
    hil_send_frame(HIL_MSG_INFER_RESULT, req->seq, ticks_bytes, sizeof ticks_bytes, code_buffer,
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
        default:
            hil_send_error(req.seq, HIL_ERR_UNKNOWN_TYPE, "unknown message type");
            break;
        }
    }
}
