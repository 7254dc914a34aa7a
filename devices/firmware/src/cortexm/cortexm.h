/* Cortex-M core registers used by the firmware (ARMv7-M Architecture Reference Manual, B3). */
#ifndef HIL_CORTEXM_H
#define HIL_CORTEXM_H

#include <stdint.h>

#define HIL_REG32(addr) (*(volatile uint32_t *)(addr))

/* NVIC: set-enable, clear-enable and clear-pending registers, 32 interrupts per word. */
#define NVIC_ISER(word) HIL_REG32(0xE000E100u + 4u * (word))
#define NVIC_ICER(word) HIL_REG32(0xE000E180u + 4u * (word))
#define NVIC_ICPR(word) HIL_REG32(0xE000E280u + 4u * (word))

/*
 * Sleep (WFI) until (*status & mask) != 0, woken by device interrupt `irq`, which is never
 * taken: PRIMASK is set while waiting and the interrupt is enabled in the NVIC only then. An
 * interrupt that would be taken but for PRIMASK still wakes WFI (ARMv7-M ARM B1.5.19), so no
 * handler or vector is needed. A polled wait keeps an emulator's host thread at 100%; this one
 * lets it idle between requests, and a real core too.
 */
static inline void hil_sleep_until(unsigned irq, volatile uint32_t *status, uint32_t mask)
{
    const uint32_t bit = 1u << (irq & 31u);
    const unsigned word = irq >> 5;
    __asm volatile("cpsid i" ::: "memory");
    NVIC_ICPR(word) = bit;
    NVIC_ISER(word) = bit;
    while ((*status & mask) == 0u) {
        __asm volatile("wfi" ::: "memory");
        NVIC_ICPR(word) = bit;   /* a level that is still high pends again */
    }
    NVIC_ICER(word) = bit;
    NVIC_ICPR(word) = bit;
    __asm volatile("cpsie i" ::: "memory");
}

/* System control block */
#define SCB_ICSR    HIL_REG32(0xE000ED04u)   /* interrupt control and state */
#define SCB_ICSR_PENDSTCLR (1u << 25)         /* clear a pending SysTick exception */
#define SCB_CPACR   HIL_REG32(0xE000ED88u)   /* coprocessor access: CP10/CP11 = FPU */

/* SysTick */
#define SYST_CSR    HIL_REG32(0xE000E010u)
#define SYST_RVR    HIL_REG32(0xE000E014u)
#define SYST_CVR    HIL_REG32(0xE000E018u)
#define SYST_CSR_ENABLE    (1u << 0)
#define SYST_CSR_TICKINT   (1u << 1)
#define SYST_CSR_CLKSOURCE (1u << 2)          /* 1 = processor clock */

/* Debug: DWT cycle counter */
#define DEMCR       HIL_REG32(0xE000EDFCu)
#define DEMCR_TRCENA       (1u << 24)
#define DWT_CTRL    HIL_REG32(0xE0001000u)
#define DWT_CYCCNT  HIL_REG32(0xE0001004u)
#define DWT_CTRL_CYCCNTENA (1u << 0)

/* Busy-wait at least `cycles` core cycles: each pass of the loop is a SUBS and a taken BNE,
 * at least 3 cycles on Cortex-M3/M4 (more with flash wait states); under QEMU -icount, 2
 * instructions. */
static inline void hil_delay_cycles(uint32_t cycles)
{
    uint32_t passes = cycles / 3u + 1u;
    __asm volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(passes) : : "cc");
}

static inline void hil_dsb(void) { __asm__ volatile("dsb" ::: "memory"); }
static inline void hil_isb(void) { __asm__ volatile("isb" ::: "memory"); }

#endif /* HIL_CORTEXM_H */
