/* The Arm CMSDK AHB GPIO (Cortex-M System Design Kit TRM, section 4.2), for the marker pin. */
#ifndef HIL_CMSDK_GPIO_H
#define HIL_CMSDK_GPIO_H

#include <stdint.h>

/* Make `pin` (0..7) an output driven low. */
void cmsdk_gpio_output_init(uintptr_t base, unsigned pin);
/* Drive `pin` (0..7) high (nonzero) or low through the masked low-byte alias: one store. */
void cmsdk_gpio_write(uintptr_t base, unsigned pin, int high);

#endif /* HIL_CMSDK_GPIO_H */
