/* Cortex-M core registers used by the firmware (ARMv7-M Architecture Reference Manual, B3). */
#ifndef HIL_CORTEXM_H
#define HIL_CORTEXM_H

#include <stdint.h>

#define HIL_REG32(addr) (*(volatile uint32_t *)(addr))

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

static inline void hil_dsb(void) { __asm__ volatile("dsb" ::: "memory"); }
static inline void hil_isb(void) { __asm__ volatile("isb" ::: "memory"); }

#endif /* HIL_CORTEXM_H */
