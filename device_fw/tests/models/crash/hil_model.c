/* Hand-written test model whose inference crashes the CPU with an illegal instruction (SIGILL on a host,
 * EXCCAUSE 0 on the lx106), so tests can check that a dead device fails fast with a clear message
 * instead of hanging (tests/test_protocol_device.py). */
#include "hil_model.h"

static union {
    int8_t bytes[16];
    double align;
} arena;

static const hil_tensor_info_t inputs[1] = {
    {HIL_DTYPE_INT8, 2, {1, 16, 0, 0}, 0, 1.0f, 16, 0},
};

static const hil_tensor_info_t outputs[1] = {
    {HIL_DTYPE_INT8, 2, {1, 16, 0, 0}, 0, 1.0f, 16, 0},
};

const hil_model_info_t hil_model_info = {"crash", {0}, sizeof arena.bytes, 1, 1, inputs, outputs, 0};

int8_t *hil_model_arena(void)
{
    return arena.bytes;
}

int hil_model_invoke(void)
{
#ifdef __XTENSA__
    __asm__ __volatile__("ill"); /* explicit: gcc emits `break` for __builtin_trap() here */
#else
    __builtin_trap();
#endif
    return 1;
}
