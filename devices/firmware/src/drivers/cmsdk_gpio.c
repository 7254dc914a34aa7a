#include "cmsdk_gpio.h"

#define GPIO_OUTENSET(base)   (*(volatile uint32_t *)((base) + 0x010u))
#define GPIO_ALTFUNCCLR(base) (*(volatile uint32_t *)((base) + 0x01Cu))
/* MASKLOWBYTE: a write to 0x400 + (mask << 2) changes only the bits of mask in DATAOUT[7:0]. */
#define GPIO_MASKED(base, mask) (*(volatile uint32_t *)((base) + 0x400u + ((uint32_t)(mask) << 2)))

void cmsdk_gpio_output_init(uintptr_t base, unsigned pin)
{
    GPIO_MASKED(base, 1u << pin) = 0u;
    GPIO_ALTFUNCCLR(base) = 1u << pin;
    GPIO_OUTENSET(base) = 1u << pin;
}

void cmsdk_gpio_write(uintptr_t base, unsigned pin, int high)
{
    GPIO_MASKED(base, 1u << pin) = high ? (1u << pin) : 0u;
}
