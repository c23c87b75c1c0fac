/* The offload configuration of a firmware whose model has none: INFER_OFFLOAD then answers
 * ERROR UNSUPPORTED. device_fw/Makefile and the esp32s3 CMakeLists.txt compile this file only when the model
 * directory has no hil_offload.c (hil/offload/codegen.py writes that one from agilenn.json). */
#include <stddef.h>

#include "hil_offload.h"

const hil_offload_config_t *hil_offload_config(void)
{
    return NULL;
}
