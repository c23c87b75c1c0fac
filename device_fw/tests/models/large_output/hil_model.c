/* Hand-written test model whose outputs do not fit one INFER reply (65535 bytes), so the host must fetch
 * them with READ_OUTPUT (tests/test_protocol_device.py).
 *   input 0  int8 [1, 16]
 *   output 0 int8 [1, 16]           = input reversed
 *   output 1 int8 [1, 300, 300]     : element i = (int8)(input[i % 16] + i), wrapping modulo 256
 * Output 1 alone (90000 bytes) needs two READ_OUTPUT chunks of at most 65530 bytes. */
#include "hil_model.h"

#define N_IN 16u
#define N_BIG 90000u
#define IN_OFF 0u
#define OUT0_OFF 16u
#define OUT1_OFF 32u
#define ARENA_BYTES (OUT1_OFF + N_BIG)

static union {
    int8_t bytes[ARENA_BYTES];
    double align;
} arena;

static const hil_tensor_info_t inputs[1] = {
    {HIL_DTYPE_INT8, 2, {1, N_IN, 0, 0}, 0, 1.0f, N_IN, IN_OFF},
};

static const hil_tensor_info_t outputs[2] = {
    {HIL_DTYPE_INT8, 2, {1, N_IN, 0, 0}, 0, 1.0f, N_IN, OUT0_OFF},
    {HIL_DTYPE_INT8, 3, {1, 300, 300, 0}, 0, 1.0f, N_BIG, OUT1_OFF},
};

const hil_model_info_t hil_model_info = {
    "large_output",
    {0},
    ARENA_BYTES,
    1,
    2,
    inputs,
    outputs,
    0, /* inputs_consumed: the input stays intact */
};

int8_t *hil_model_arena(void)
{
    return arena.bytes;
}

int hil_model_invoke(void)
{
    const uint8_t *in = (const uint8_t *)(arena.bytes + IN_OFF);
    uint8_t *rev = (uint8_t *)(arena.bytes + OUT0_OFF);
    uint8_t *big = (uint8_t *)(arena.bytes + OUT1_OFF);
    uint32_t i;

    for (i = 0; i < N_IN; i++) {
        rev[i] = in[N_IN - 1u - i];
    }
    for (i = 0; i < N_BIG; i++) {
        /* i % 16 as a mask: keeps the loop free of divisions on a core without a divider */
        big[i] = (uint8_t)(in[i & (N_IN - 1u)] + (uint8_t)i);
    }
    return 0;
}
