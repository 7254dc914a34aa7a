#include "stm32_usart.h"

#include "cortexm/cortexm.h"

#define USART_SR(base)  (*(volatile uint32_t *)((base) + 0x00u))
#define USART_DR(base)  (*(volatile uint32_t *)((base) + 0x04u))
#define USART_BRR(base) (*(volatile uint32_t *)((base) + 0x08u))
#define USART_CR1(base) (*(volatile uint32_t *)((base) + 0x0Cu))

#define USART_SR_RXNE (1u << 5)
#define USART_CR1_RXNEIE (1u << 5)
#define USART_SR_TXE  (1u << 7)
#define USART_CR1_RE  (1u << 2)
#define USART_CR1_TE  (1u << 3)
#define USART_CR1_UE  (1u << 13)

void stm32_usart_init(uintptr_t base, uint32_t brr)
{
    USART_CR1(base) = 0;
    USART_BRR(base) = brr;
    /* RXNEIE raises the USART's interrupt line on a byte: it wakes the receive wait. */
    USART_CR1(base) = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE | USART_CR1_RXNEIE;
}

void stm32_usart_putc(uintptr_t base, uint8_t byte)
{
    while ((USART_SR(base) & USART_SR_TXE) == 0) {
    }
    USART_DR(base) = byte;
}

uint8_t stm32_usart_getc(uintptr_t base, unsigned irq)
{
    if ((USART_SR(base) & USART_SR_RXNE) == 0) {
        hil_sleep_until(irq, &USART_SR(base), USART_SR_RXNE);
    }
    return (uint8_t)USART_DR(base);
}
