/*
 * Arm MPS2+ AN385 (Cortex-M3) as emulated by qemu-system-arm -M mps2-an385.
 *
 * The same memory map, console (CMSDK APB UART0 @0x40004000) and 25 MHz clock as the AN386
 * image, so the AN386's board code serves under this board's name. The Cortex-M3 has no DSP
 * extension: the generated model runs the portable kernels here (see
 * devices/firmware/kernels/hil_dsp.h).
 */
#define MPS2_BOARD_NAME "mps2-an385"
#include "../mps2-an386/board.c"
