/*
 * Device side of the hilbench frame protocol (the host side is harness/targets/mcu/protocol.py).
 *
 * Wire format: COBS(body) 0x00, body = type (u8) | seq (u16 LE) | payload | CRC-32 (u32 LE),
 * CRC-32 = IEEE 802.3 (zlib.crc32) over type, seq and payload. Replies echo the request's seq.
 */
#ifndef HIL_PROTOCOL_H
#define HIL_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define HIL_PROTOCOL_VERSION 2u

/* Message types: requests have bit 7 clear, replies set. */
#define HIL_MSG_HELLO_REQUEST 0x01u
#define HIL_MSG_PING          0x02u
#define HIL_MSG_INFER         0x03u
#define HIL_MSG_PROFILE       0x04u
#define HIL_MSG_HELLO         0x81u
#define HIL_MSG_PONG          0x82u
#define HIL_MSG_INFER_RESULT  0x83u
#define HIL_MSG_PROFILE_RESULT 0x84u
#define HIL_MSG_ERROR         0xFFu

/* ERROR message codes (u16). */
#define HIL_ERR_BAD_FRAME       1u   /* COBS, length or CRC check failed */
#define HIL_ERR_FRAME_TOO_LONG  2u   /* frame exceeded the receive buffer */
#define HIL_ERR_UNKNOWN_TYPE    3u
#define HIL_ERR_BAD_LENGTH      4u   /* payload length wrong for the message type */
#define HIL_ERR_MODEL_FAILED    5u   /* hil_model_encode returned nonzero */
#define HIL_ERR_MODEL_TOO_LARGE 6u   /* model input/code exceeds the firmware's buffers */

/* Frame header and trailer sizes inside the body. */
#define HIL_FRAME_HEADER_BYTES  3u
#define HIL_FRAME_CRC_BYTES     4u

/* Sequence number used when a request's own seq cannot be trusted (corrupted frame). */
#define HIL_SEQ_UNKNOWN 0xFFFFu

typedef struct {
    uint8_t type;
    uint16_t seq;
    const uint8_t *payload;
    size_t payload_len;
} hil_frame_t;

uint32_t hil_crc32_update(uint32_t crc, const uint8_t *data, size_t len);
uint32_t hil_crc32(const uint8_t *data, size_t len);

/* Decode COBS in place; returns the decoded length, or -1 if the encoding is invalid. */
long hil_cobs_decode_in_place(uint8_t *buf, size_t len);

/*
 * Block until one non-empty frame arrives. Returns 0 and fills *frame (payload points into
 * buf), or an HIL_ERR_* code if the frame was bad (frame->seq is then HIL_SEQ_UNKNOWN).
 */
int hil_receive_frame(uint8_t *buf, size_t capacity, hil_frame_t *frame);

/* Send one frame whose payload is the concatenation of two parts (either may be empty). */
void hil_send_frame(uint8_t type, uint16_t seq, const uint8_t *part1, size_t len1,
                    const uint8_t *part2, size_t len2);

/* Send an ERROR frame: code (u16 LE) followed by the text. */
void hil_send_error(uint16_t seq, uint16_t code, const char *text);

/* Little-endian writers for building payloads; each returns the advanced pointer. */
uint8_t *hil_put_u8(uint8_t *p, uint8_t v);
uint8_t *hil_put_u16(uint8_t *p, uint16_t v);
uint8_t *hil_put_u32(uint8_t *p, uint32_t v);
uint8_t *hil_put_u64(uint8_t *p, uint64_t v);
/* Unsigned LEB128: 7 bits a byte, low first, high bit set on all but the last (<= 10 bytes). */
uint8_t *hil_put_uleb128(uint8_t *p, uint64_t v);

#endif /* HIL_PROTOCOL_H */
