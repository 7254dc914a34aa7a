/*
 * Arm MPS2+ AN386 (Cortex-M4) as emulated by qemu-system-arm -M mps2-an386.
 *
 * Console: CMSDK APB UART0 @0x40004000. System clock 25 MHz (FPGA image and QEMU model).
 * Marker: CMSDK AHB GPIO0 bit 0 @0x40010000 (harness/config/boards.py). QEMU maps the GPIO
 * blocks as unimplemented devices: the writes are accepted and ignored (visible with -d unimp).
 */
#include "board.h"
#include "drivers/cmsdk_gpio.h"
#include "drivers/cmsdk_uart.h"

#define UART0_BASE        0x40004000u
#define UART0_RX_IRQ      0u            /* AN386 interrupt map: UART0 receive */
#define TIMER0_VALUE      0x40000004u   /* CMSDK timer 0 current value; read as a wake-up */
#define CLOCK_HZ          25000000u
#define BAUD              115200u
#define GPIO0_BASE        0x40010000u
#define MARKER_PIN        0u

void board_init(void)
{
    cmsdk_uart_init(UART0_BASE, CLOCK_HZ / BAUD);
    cmsdk_gpio_output_init(GPIO0_BASE, MARKER_PIN);
}

void board_marker(int high)
{
    cmsdk_gpio_write(GPIO0_BASE, MARKER_PIN, high);
}

void board_uart_putc(uint8_t byte)
{
    cmsdk_uart_putc(UART0_BASE, byte);
}

uint8_t board_uart_getc(void)
{
    return cmsdk_uart_getc(UART0_BASE, UART0_RX_IRQ, TIMER0_VALUE);
}

#ifndef MPS2_BOARD_NAME
#define MPS2_BOARD_NAME "mps2-an386"   /* boards/mps2-an385 reuses this file under its own name */
#endif

const char *board_name(void)
{
    return MPS2_BOARD_NAME;
}

uint32_t board_clock_hz(void)
{
    return CLOCK_HZ;
}
