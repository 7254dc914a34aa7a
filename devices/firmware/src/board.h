/*
 * The board interface: everything main.c needs from a board, nothing more.
 *
 * Each boards/<name>/board.c implements the UART and identity functions; the timer is a
 * Cortex-M core peripheral and lives in cortexm/timer.c, chosen at compile time:
 *   -DHIL_TIMER_DWT      DWT cycle counter (CYCCNT): real boards, ticks are CPU cycles.
 *   -DHIL_TIMER_SYSTICK  SysTick on the core clock, extended to 64 bits by its wrap interrupt:
 *                        emulated boards (QEMU does not implement DWT; with -icount the
 *                        SysTick counts executed instructions at a fixed rate).
 */
#ifndef HIL_BOARD_H
#define HIL_BOARD_H

#include <stdint.h>

/* Values of the HELLO message's timer-kind field. */
#define HIL_TIMER_KIND_SYSTICK 0u
#define HIL_TIMER_KIND_DWT     1u

/* Clocks, UART and the marker pin (driven low); called once, first thing in main(). */
void board_init(void);
/* Blocking write of one byte. */
void board_uart_putc(uint8_t byte);
/* Blocking read of one byte. */
uint8_t board_uart_getc(void);
/* Short board name reported in HELLO (e.g. "netduinoplus2"). */
const char *board_name(void);
/* Core clock the firmware runs at, in Hz. */
uint32_t board_clock_hz(void);

/* Restart the tick counter from zero; called right before the code to be timed. Restarting
 * (rather than differencing a free-running counter) makes emulated counts exact: QEMU's SysTick
 * ticks a non-integer number of times per instruction, so a free-running counter's phase, which
 * depends on how long the firmware polled the UART, would add a +-1 tick jitter, and its wrap
 * interrupt would land inside some measurements and not others. */
void board_timer_start(void);
/* Ticks since the last board_timer_start. */
uint64_t board_timer_read(void);
/* Stop the counter until the next start (a running SysTick would wake the idle core). */
void board_timer_stop(void);
/* The energy-window marker: a GPIO output a power meter records with its samples (PPK2 logic
 * input, Joulescope GPI). main.c raises it right before each inference is timed and lowers it
 * right after, so the meter's samples between the edges are that inference's energy. Each board
 * lists its pin in harness/config/boards.py (BoardDescription.marker); the emulated boards drive
 * the same register writes into QEMU, which has no GPIO model there (the writes are ignored). */
void board_marker(int high);

/* Tick rate in Hz. */
uint32_t board_timer_hz(void);
/* HIL_TIMER_KIND_SYSTICK or HIL_TIMER_KIND_DWT. */
uint8_t board_timer_kind(void);

#endif /* HIL_BOARD_H */
