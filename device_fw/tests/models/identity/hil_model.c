/* Hand-written test model for the protocol tests (tests/test_protocol_device.py): outputs that are easy
 * to predict exactly, no kernels needed.
 *   input 0  int8 [1, 1000]
 *   output 0 int8 [1, 1000]     = input (a copy)
 *   output 1 int8 [1, 10, 100]  = -input, saturated (-(-128) = 127)
 * The quantization parameters and sha256 are arbitrary but distinct so the INFO parser is checked. */
#include <string.h>

#include "hil_model.h"

#define N 1000u
#define IN_OFF 0u
#define OUT0_OFF 1008u /* 16-byte aligned, like a generated arena */
#define OUT1_OFF 2016u
#define ARENA_BYTES 3024u

static union {
    int8_t bytes[ARENA_BYTES];
    double align; /* alignment without compiler extensions; 16 is not needed by this model */
} arena;

static const hil_tensor_info_t inputs[1] = {
    {HIL_DTYPE_INT8, 2, {1, N, 0, 0}, -3, 0.5f, N, IN_OFF},
};

static const hil_tensor_info_t outputs[2] = {
    {HIL_DTYPE_INT8, 2, {1, N, 0, 0}, -3, 0.5f, N, OUT0_OFF},
    {HIL_DTYPE_INT8, 3, {1, 10, 100, 0}, 3, 0.25f, N, OUT1_OFF},
};

const hil_model_info_t hil_model_info = {
    "identity",
    {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
     0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f},
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
    const int8_t *in = arena.bytes + IN_OFF;
    int8_t *neg = arena.bytes + OUT1_OFF;
    unsigned i;

    memcpy(arena.bytes + OUT0_OFF, in, N);
    for (i = 0; i < N; i++) {
        neg[i] = (int8_t)(in[i] == -128 ? 127 : -in[i]);
    }
    return 0;
}
