#include "cmsdk_uart.h"

#include "cortexm/cortexm.h"

#define UART_DATA(base)    (*(volatile uint32_t *)((base) + 0x00u))
#define UART_STATE(base)   (*(volatile uint32_t *)((base) + 0x04u))
#define UART_CTRL(base)    (*(volatile uint32_t *)((base) + 0x08u))
#define UART_INTSTATUS(base) (*(volatile uint32_t *)((base) + 0x0Cu))   /* write 1 to clear */
#define UART_BAUDDIV(base) (*(volatile uint32_t *)((base) + 0x10u))

#define UART_STATE_TX_FULL (1u << 0)
#define UART_STATE_RX_FULL (1u << 1)
#define UART_CTRL_TX_EN    (1u << 0)
#define UART_CTRL_RX_EN    (1u << 1)
#define UART_CTRL_RX_INTEN (1u << 3)
#define UART_INT_RX        (1u << 1)

void cmsdk_uart_init(uintptr_t base, uint32_t bauddiv)
{
    UART_BAUDDIV(base) = bauddiv;
    /* The RX interrupt line wakes the receive wait (see cmsdk_uart_getc). */
    UART_CTRL(base) = UART_CTRL_TX_EN | UART_CTRL_RX_EN | UART_CTRL_RX_INTEN;
}

void cmsdk_uart_putc(uintptr_t base, uint8_t byte)
{
    while (UART_STATE(base) & UART_STATE_TX_FULL) {
    }
    UART_DATA(base) = byte;
}

uint8_t cmsdk_uart_getc(uintptr_t base, unsigned rx_irq, uintptr_t wake_reg)
{
    if ((UART_STATE(base) & UART_STATE_RX_FULL) == 0) {
        hil_sleep_until(rx_irq, &UART_STATE(base), UART_STATE_RX_FULL);
    }
    uint8_t byte = (uint8_t)UART_DATA(base);
    UART_INTSTATUS(base) = UART_INT_RX;   /* the RX interrupt stays asserted until cleared */
    if (wake_reg != 0) {
        /* QEMU 7.2's CMSDK UART model sometimes stalls receive for ~1 s; touching a timer
         * register after each byte wakes QEMU's event loop. Harmless on hardware. */
        (void)*(volatile uint32_t *)wake_reg;
    }
    return byte;
}
