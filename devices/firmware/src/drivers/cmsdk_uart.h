/* Driver for the Arm CMSDK APB UART (used by the MPS2 FPGA images). */
#ifndef HIL_CMSDK_UART_H
#define HIL_CMSDK_UART_H

#include <stdint.h>

/* Enable TX and RX; bauddiv = uart clock / baud (must be >= 16). */
void cmsdk_uart_init(uintptr_t base, uint32_t bauddiv);
void cmsdk_uart_putc(uintptr_t base, uint8_t byte);
/* Wait for a byte, asleep (rx_irq: the UART's RX interrupt number, never taken); after it
 * arrives, read wake_reg (see cmsdk_uart.c) unless it is 0. */
uint8_t cmsdk_uart_getc(uintptr_t base, unsigned rx_irq, uintptr_t wake_reg);

#endif /* HIL_CMSDK_UART_H */
