/* Interface between the shared core and a compiled model.
 *
 * The model compiler (hil/model/codegen.py) generates one C file per model that defines
 * hil_model_info, the static tensor arena and hil_model_invoke(). Everything the protocol
 * reports about the model (tensor shapes, quantization, sha256) comes from hil_model_info. */
#ifndef HIL_MODEL_H
#define HIL_MODEL_H

#include <stdint.h>

#define HIL_DTYPE_INT8 1
#define HIL_DTYPE_INT16 2 /* 16x8 models: int16 activations, little-endian on the wire */

typedef struct {
    uint8_t dtype;        /* HIL_DTYPE_INT8 or HIL_DTYPE_INT16 */
    uint8_t rank;         /* 1..4 */
    uint32_t dims[4];     /* unused dims are 0 */
    int32_t zero_point;
    float scale;
    uint32_t bytes;
    uint32_t arena_offset; /* where the tensor lives in the arena */
} hil_tensor_info_t;

typedef struct {
    const char *name;
    uint8_t sha256[32];    /* sha256 of the source .tflite */
    uint32_t arena_bytes;
    uint8_t n_inputs;
    uint8_t n_outputs;
    const hil_tensor_info_t *inputs;
    const hil_tensor_info_t *outputs;
    /* 1: an inference may overwrite its input tensors (the arena reuses their bytes; model.json
     * input_preserved false), so the firmware runs INFER again only after a LOAD_INPUT. 0 (also what a
     * hand-written model that leaves this out gets): the inputs stay intact and INFER is repeatable. */
    uint8_t inputs_consumed;
} hil_model_info_t;

extern const hil_model_info_t hil_model_info;

/* Base of the static tensor arena (hil_model_info.arena_bytes long, 16-byte aligned). */
int8_t *hil_model_arena(void);

/* Runs the whole graph on the input tensors already in the arena. 0 on success. */
int hil_model_invoke(void);

/* Per-operator hook: generated code calls it after each kernel call with the operator's index (the op index
 * of model.json). The firmware (core/src/app.c) records the cycles each operator took, so a reply can split
 * an inference into stages (extractor, Local NN); the host model runner defines it as a no-op. Operators
 * without a kernel (aliases) make no call. */
void hil_model_op_done(int op_index);

/* Operators whose cycles the firmware records; an index at or above this is not recorded. */
#define HIL_MAX_OPS 256

#endif
