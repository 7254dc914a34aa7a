/*
 * Netduino Plus 2 (STM32F405, Cortex-M4F) as emulated by qemu-system-arm -M netduinoplus2.
 *
 * Console: USART1 @0x40011000 (QEMU's first -serial). QEMU models SYSCLK as a fixed 168 MHz
 * and ignores RCC, so the firmware does not program the PLL; on a real Netduino the part would
 * run from the 16 MHz HSI unless the PLL were set up.
 *
 * Marker: GPIO PA8 (harness/config/boards.py). QEMU 7.2 maps the STM32F405's GPIO ports as
 * unimplemented devices: the writes are accepted and ignored (visible with -d unimp).
 */
#include "board.h"
#include "drivers/stm32_gpio.h"
#include "drivers/stm32_usart.h"

#define USART1_BASE    0x40011000u
#define USART1_IRQ     37u            /* RM0090 table 61 */
#define RCC_APB2ENR    (*(volatile uint32_t *)0x40023844u)
#define RCC_APB2ENR_USART1EN (1u << 4)
#define CLOCK_HZ       168000000u
#define BAUD           115200u
#define MARKER_PORT    0u             /* GPIOA */
#define MARKER_PIN     8u
#define MARKER_BASE    (STM32_GPIOA_BASE + MARKER_PORT * STM32_GPIO_PORT_STRIDE)

void board_init(void)
{
    RCC_APB2ENR |= RCC_APB2ENR_USART1EN;
    /* USART1 is on APB2, which runs at SYSCLK/2 when SYSCLK is 168 MHz. */
    stm32_usart_init(USART1_BASE, STM32_USART_BRR(CLOCK_HZ / 2u, BAUD));
    stm32_gpio_output_init(MARKER_BASE, MARKER_PORT, MARKER_PIN);
}

void board_marker(int high)
{
    stm32_gpio_write(MARKER_BASE, MARKER_PIN, high);
}

void board_uart_putc(uint8_t byte)
{
    stm32_usart_putc(USART1_BASE, byte);
}

uint8_t board_uart_getc(void)
{
    return stm32_usart_getc(USART1_BASE, USART1_IRQ);
}

const char *board_name(void)
{
    return "netduinoplus2";
}

uint32_t board_clock_hz(void)
{
    return CLOCK_HZ;
}
