/* The STM32F4 GPIO pin the energy-window marker drives (RM0090 / RM0390 section 8). */
#ifndef HIL_STM32_GPIO_H
#define HIL_STM32_GPIO_H

#include <stdint.h>

/* GPIO port bases on the AHB1 bus (the same on STM32F405 and STM32F446). */
#define STM32_GPIOA_BASE 0x40020000u
#define STM32_GPIO_PORT_STRIDE 0x400u

/* Clock the port (RCC_AHB1ENR bit = port index) and make `pin` a push-pull output, driven low. */
void stm32_gpio_output_init(uintptr_t base, unsigned port_index, unsigned pin);
/* Drive `pin` high (nonzero) or low through BSRR: one store, no read-modify-write. */
void stm32_gpio_write(uintptr_t base, unsigned pin, int high);

#endif /* HIL_STM32_GPIO_H */
