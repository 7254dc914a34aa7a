/* Device side of the hilbench frame protocol: CRC-32, COBS and frame I/O over the board UART. */
#include "protocol.h"

#include <string.h>

#include "board.h"

/* Half-byte table for the reflected IEEE polynomial 0xEDB88320: 64 bytes of flash instead of
 * 1 KiB, fast enough for a UART-bound link. */
static const uint32_t crc32_nibble_table[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t hil_crc32_update(uint32_t crc, const uint8_t *data, size_t len)
{
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ crc32_nibble_table[crc & 0xFu];
        crc = (crc >> 4) ^ crc32_nibble_table[crc & 0xFu];
    }
    return ~crc;
}

uint32_t hil_crc32(const uint8_t *data, size_t len)
{
    return hil_crc32_update(0, data, len);
}

long hil_cobs_decode_in_place(uint8_t *buf, size_t len)
{
    size_t in = 0, out = 0;
    while (in < len) {
        uint8_t code = buf[in++];
        if (code == 0 || in + (size_t)code - 1u > len) {
            return -1;
        }
        for (uint8_t i = 1; i < code; i++) {
            uint8_t byte = buf[in++];
            if (byte == 0) {
                return -1;
            }
            buf[out++] = byte;
        }
        if (code != 0xFFu && in < len) {
            buf[out++] = 0;
        }
    }
    return (long)out;
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

int hil_receive_frame(uint8_t *buf, size_t capacity, hil_frame_t *frame)
{
    size_t len = 0;
    int overflow = 0;
    frame->seq = HIL_SEQ_UNKNOWN;
    for (;;) {
        uint8_t byte = board_uart_getc();
        if (byte != 0) {
            if (len < capacity) {
                buf[len++] = byte;
            } else {
                overflow = 1;
            }
            continue;
        }
        if (overflow) {
            return HIL_ERR_FRAME_TOO_LONG;
        }
        if (len > 0) {
            break;
        }
        /* An empty frame (bare delimiter) is how a host resynchronises; ignore it. */
    }
    long body_len = hil_cobs_decode_in_place(buf, len);
    if (body_len < (long)(HIL_FRAME_HEADER_BYTES + HIL_FRAME_CRC_BYTES)) {
        return HIL_ERR_BAD_FRAME;
    }
    size_t covered = (size_t)body_len - HIL_FRAME_CRC_BYTES;
    if (hil_crc32(buf, covered) != get_u32(buf + covered)) {
        return HIL_ERR_BAD_FRAME;
    }
    frame->type = buf[0];
    frame->seq = get_u16(buf + 1);
    frame->payload = buf + HIL_FRAME_HEADER_BYTES;
    frame->payload_len = covered - HIL_FRAME_HEADER_BYTES;
    return 0;
}

/* Streaming COBS encoder: buffers one block of up to 254 non-zero bytes, so a frame can be
 * sent from several pieces without assembling it in RAM first. */
typedef struct {
    uint8_t block[254];
    uint8_t len;
} cobs_writer_t;

static void cobs_flush_block(cobs_writer_t *w, uint8_t code)
{
    board_uart_putc(code);
    for (uint8_t i = 0; i < w->len; i++) {
        board_uart_putc(w->block[i]);
    }
    w->len = 0;
}

static void cobs_put(cobs_writer_t *w, uint8_t byte)
{
    if (byte == 0) {
        cobs_flush_block(w, (uint8_t)(w->len + 1u));
        return;
    }
    w->block[w->len++] = byte;
    if (w->len == sizeof w->block) {
        cobs_flush_block(w, 0xFFu);
    }
}

static void cobs_put_all(cobs_writer_t *w, const uint8_t *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        cobs_put(w, data[i]);
    }
}

void hil_send_frame(uint8_t type, uint16_t seq, const uint8_t *part1, size_t len1,
                    const uint8_t *part2, size_t len2)
{
    static cobs_writer_t writer;
    uint8_t header[HIL_FRAME_HEADER_BYTES];
    uint8_t crc_bytes[HIL_FRAME_CRC_BYTES];

    hil_put_u16(hil_put_u8(header, type), seq);
    uint32_t crc = hil_crc32(header, sizeof header);
    crc = hil_crc32_update(crc, part1, len1);
    crc = hil_crc32_update(crc, part2, len2);
    hil_put_u32(crc_bytes, crc);

    writer.len = 0;
    cobs_put_all(&writer, header, sizeof header);
    cobs_put_all(&writer, part1, len1);
    cobs_put_all(&writer, part2, len2);
    cobs_put_all(&writer, crc_bytes, sizeof crc_bytes);
    cobs_flush_block(&writer, (uint8_t)(writer.len + 1u));
    board_uart_putc(0);
}

void hil_send_error(uint16_t seq, uint16_t code, const char *text)
{
    uint8_t code_bytes[2];
    hil_put_u16(code_bytes, code);
    hil_send_frame(HIL_MSG_ERROR, seq, code_bytes, sizeof code_bytes, (const uint8_t *)text,
                   strlen(text));
}

uint8_t *hil_put_u8(uint8_t *p, uint8_t v)
{
    *p++ = v;
    return p;
}

uint8_t *hil_put_u16(uint8_t *p, uint16_t v)
{
    *p++ = (uint8_t)v;
    *p++ = (uint8_t)(v >> 8);
    return p;
}

uint8_t *hil_put_u32(uint8_t *p, uint32_t v)
{
    return hil_put_u16(hil_put_u16(p, (uint16_t)v), (uint16_t)(v >> 16));
}

uint8_t *hil_put_u64(uint8_t *p, uint64_t v)
{
    return hil_put_u32(hil_put_u32(p, (uint32_t)v), (uint32_t)(v >> 32));
}

uint8_t *hil_put_uleb128(uint8_t *p, uint64_t v)
{
    do {
        uint8_t byte = (uint8_t)(v & 0x7Fu);
        v >>= 7;
        *p++ = v != 0 ? (uint8_t)(byte | 0x80u) : byte;
    } while (v != 0);
    return p;
}
