/*
 * The tick counter behind board_timer_*: DWT CYCCNT or SysTick, chosen at compile time.
 *
 * Both run at the core clock, so the tick rate is board_clock_hz(). Each measurement restarts
 * the counter from zero (see board.h for why).
 */
#include <stdint.h>

#include "board.h"
#include "cortexm.h"

#if defined(HIL_TIMER_DWT) == defined(HIL_TIMER_SYSTICK)
#error "define exactly one of HIL_TIMER_DWT or HIL_TIMER_SYSTICK"
#endif

uint32_t board_timer_hz(void)
{
    return board_clock_hz();
}

#if defined(HIL_TIMER_DWT)

void board_timer_start(void)
{
    DEMCR |= DEMCR_TRCENA;
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;
    DWT_CYCCNT = 0;
}

uint64_t board_timer_read(void)
{
    /* 32 bits: measurements up to 2^32 cycles (268 s at 16 MHz, 24 s at 180 MHz). */
    return DWT_CYCCNT;
}

void board_timer_stop(void)
{
}

uint8_t board_timer_kind(void)
{
    return HIL_TIMER_KIND_DWT;
}

#else /* HIL_TIMER_SYSTICK */

#define SYSTICK_PERIOD (1u << 24)   /* the 24-bit counter counts down from RVR = 2^24 - 1 */

static volatile uint32_t systick_wraps;

void SysTick_Handler(void)
{
    systick_wraps++;
}

void board_timer_start(void)
{
    SYST_CSR = 0;
    SCB_ICSR = SCB_ICSR_PENDSTCLR;   /* drop a wrap of the previous run not yet taken */
    SYST_RVR = SYSTICK_PERIOD - 1u;
    SYST_CVR = 0;
    systick_wraps = 0;
    SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
    /* The counter shows 0 until its first reload from RVR (one clock); start counting there. */
    while (SYST_CVR == 0) {
    }
}

uint64_t board_timer_read(void)
{
    /* A wrap between the two reads runs the (enabled) interrupt at once, which changes
     * systick_wraps; retry until both reads see the same wrap count. The counter has reloaded
     * by the time the handler runs (12-cycle exception entry on hardware; QEMU reloads before
     * raising the interrupt), so a new wrap count never pairs with the old count's 0. */
    uint32_t wraps, value;
    do {
        wraps = systick_wraps;
        value = SYST_CVR;
    } while (wraps != systick_wraps);
    return (uint64_t)wraps * SYSTICK_PERIOD + (SYSTICK_PERIOD - 1u - value);
}

void board_timer_stop(void)
{
    SYST_CSR = 0;
    SCB_ICSR = SCB_ICSR_PENDSTCLR;
}

uint8_t board_timer_kind(void)
{
    return HIL_TIMER_KIND_SYSTICK;
}

#endif
