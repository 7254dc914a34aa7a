/* Driver for the STM32F4 USART (RM0090 section 30.6), shared by the STM32 boards. */
#ifndef HIL_STM32_USART_H
#define HIL_STM32_USART_H

#include <stdint.h>

/* Enable transmitter and receiver; brr is the USART_BRR value for the wanted baud rate. */
void stm32_usart_init(uintptr_t base, uint32_t brr);
void stm32_usart_putc(uintptr_t base, uint8_t byte);
/* Wait for a byte, asleep: irq is the USART's interrupt number (it is never taken). */
uint8_t stm32_usart_getc(uintptr_t base, unsigned irq);

/* USART_BRR for oversampling by 16: pclk / baud, rounded. */
#define STM32_USART_BRR(pclk_hz, baud) (((pclk_hz) + (baud) / 2u) / (baud))

#endif /* HIL_STM32_USART_H */
