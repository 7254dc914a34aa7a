/*
 * NUCLEO-F446RE (STM32F446RE, Cortex-M4F), a real board: build-only in the test suite.
 *
 * Console: USART2 @0x40004400 on PA2/PA3 (AF7), wired to the ST-LINK virtual COM port.
 * Clock: the reset default, HSI 16 MHz (no PLL setup), so SYSCLK = HCLK = PCLK1 = 16 MHz;
 * timing uses the DWT cycle counter (build with -DHIL_TIMER_DWT).
 *
 * Marker: PA8, Arduino D7 (CN9 pin 8; morpho CN10 pin 23): wire it to the meter's logic input
 * (PPK2 D0-D7, Joulescope GPI0/1) and the meter's GND to the board's GND. Not the user LED (PA5):
 * an LED's current would be measured with the inference.
 */
#include "board.h"
#include "drivers/stm32_gpio.h"
#include "drivers/stm32_usart.h"

#define USART2_BASE   0x40004400u
#define USART2_IRQ    38u   /* RM0390 table 38 */
#define RCC_AHB1ENR   (*(volatile uint32_t *)0x40023830u)
#define RCC_APB1ENR   (*(volatile uint32_t *)0x40023840u)
#define GPIOA_MODER   (*(volatile uint32_t *)0x40020000u)
#define GPIOA_AFRL    (*(volatile uint32_t *)0x40020020u)
#define RCC_AHB1ENR_GPIOAEN  (1u << 0)
#define RCC_APB1ENR_USART2EN (1u << 17)
#define CLOCK_HZ      16000000u
#define BAUD          115200u
#define MARKER_PORT   0u   /* GPIOA */
#define MARKER_PIN    8u
#define MARKER_BASE   (STM32_GPIOA_BASE + MARKER_PORT * STM32_GPIO_PORT_STRIDE)

void board_init(void)
{
    RCC_AHB1ENR |= RCC_AHB1ENR_GPIOAEN;
    RCC_APB1ENR |= RCC_APB1ENR_USART2EN;
    (void)RCC_APB1ENR; /* read back: the peripheral clock needs two cycles before access */
    /* PA2 (TX) and PA3 (RX): alternate function mode (0b10), AF7 = USART2. */
    GPIOA_MODER = (GPIOA_MODER & ~(0xFu << 4)) | (0xAu << 4);
    GPIOA_AFRL = (GPIOA_AFRL & ~(0xFFu << 8)) | (0x77u << 8);
    stm32_usart_init(USART2_BASE, STM32_USART_BRR(CLOCK_HZ, BAUD));
    stm32_gpio_output_init(MARKER_BASE, MARKER_PORT, MARKER_PIN);
}

void board_marker(int high)
{
    stm32_gpio_write(MARKER_BASE, MARKER_PIN, high);
}

void board_uart_putc(uint8_t byte)
{
    stm32_usart_putc(USART2_BASE, byte);
}

uint8_t board_uart_getc(void)
{
    return stm32_usart_getc(USART2_BASE, USART2_IRQ);
}

const char *board_name(void)
{
    return "nucleo-f446re";
}

uint32_t board_clock_hz(void)
{
    return CLOCK_HZ;
}
