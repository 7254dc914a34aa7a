#include "stm32_gpio.h"

#define RCC_AHB1ENR    (*(volatile uint32_t *)0x40023830u)
#define GPIO_MODER(base)   (*(volatile uint32_t *)((base) + 0x00u))
#define GPIO_OTYPER(base)  (*(volatile uint32_t *)((base) + 0x04u))
#define GPIO_OSPEEDR(base) (*(volatile uint32_t *)((base) + 0x08u))
#define GPIO_PUPDR(base)   (*(volatile uint32_t *)((base) + 0x0Cu))
#define GPIO_BSRR(base)    (*(volatile uint32_t *)((base) + 0x18u))

void stm32_gpio_output_init(uintptr_t base, unsigned port_index, unsigned pin)
{
    RCC_AHB1ENR |= 1u << port_index;
    (void)RCC_AHB1ENR; /* read back: the port's clock needs two cycles before access */
    GPIO_BSRR(base) = 1u << (pin + 16u);                          /* low before it drives */
    GPIO_OTYPER(base) &= ~(1u << pin);                            /* push-pull */
    GPIO_PUPDR(base) &= ~(3u << (2u * pin));                      /* no pull */
    GPIO_OSPEEDR(base) = (GPIO_OSPEEDR(base) & ~(3u << (2u * pin))) | (1u << (2u * pin)); /* medium */
    GPIO_MODER(base) = (GPIO_MODER(base) & ~(3u << (2u * pin))) | (1u << (2u * pin));    /* output */
}

void stm32_gpio_write(uintptr_t base, unsigned pin, int high)
{
    GPIO_BSRR(base) = high ? (1u << pin) : (1u << (pin + 16u));
}
